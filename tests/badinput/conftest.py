"""Fixtures of the bad-input corpus: the tiny run every run-based case copies."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "infer"))  # the run factory of the inference tests


@pytest.fixture(scope="session")
def template_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from _run_factory import make_run

    from unetkit.infer.backend import onnxruntime_installed
    from unetkit.infer.predictor import Predictor

    run = make_run(tmp_path_factory.mktemp("badinput") / "run", tile=64, overlap=0.25)
    if onnxruntime_installed():
        # The graph `--backend auto` caches beside the weights on CPUs where ONNX Runtime is the faster backend:
        # made here once, so that no case sees it appear as a new file.
        Predictor.from_run(run, backend="onnx")
    return run
