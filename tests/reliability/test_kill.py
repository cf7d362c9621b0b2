"""SIGKILL at random moments of real ``predict`` (24 files), ``export`` and ``train`` processes (see _kill.py).

One trial of each in CI (the export one is marked slow: two ONNX exports); ``benchmarks/kill_loop.sh 20`` runs them 20 times with seeds 0..19 (``KILL_SEED``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from _kill import DATASETS, export_trial, predict_trial, train_trial

SEED = int(os.environ.get("KILL_SEED", "0"))

pytestmark = pytest.mark.skipif(not DATASETS.is_dir(), reason="real datasets not found")


def test_kill_predict_leaves_only_complete_files_and_skip_existing_finishes_the_job(tmp_path: Path) -> None:
    from _run_factory import make_run

    run_dir = make_run(tmp_path / "run", tile=256)
    print(predict_trial(SEED, tmp_path, run_dir))


@pytest.mark.slow  # two ONNX exports with parity checks: about a minute (run by benchmarks/kill_loop.sh)
def test_kill_export_leaves_no_partial_model(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    from _run_factory import make_run

    run_dir = make_run(tmp_path / "run", tile=64)
    (tmp_path / "export").mkdir()
    print(export_trial(SEED, tmp_path / "export", run_dir))


@pytest.mark.parametrize("at_checkpoint", [False, True], ids=["random-moment", "during-checkpoint-write"])
def test_kill_train_leaves_loadable_checkpoints_and_resume_finishes(tmp_path: Path, at_checkpoint: bool) -> None:
    print(train_trial(SEED, tmp_path, at_checkpoint=at_checkpoint))
