"""A run killed with SIGKILL and resumed ends with the same weights as an uninterrupted run (bit-exact on CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _run_state import assert_same_last_weights, saved_step

from unetkit.cli import main

TINY = [
    "--value-map", "0:1,255:0",
    "--encoder", "plain",
    "--set", "model.kwargs.width=4",
    "--set", "model.kwargs.depth=3",
    "--set", "train.patch_size=[64,64]",
    "--set", "train.batch_size=2",
    "--set", "train.time_budget_s=null",
    "--set", "train.steps=40",
    "--set", "train.val_every=5",
    "--set", "train.warmup_steps=3",
    "--set", "infer.tile_size=[128,128]",
]  # fmt: skip


def _train_list(datasets: Path, tmp_path: Path) -> Path:
    root = datasets / "isbi2012_em_membrane"
    path = tmp_path / "train.csv"
    path.write_text("image,mask\n" + "".join(f"{root}/images/{i}.png,{root}/masks/{i}.png\n" for i in range(4)))
    return path


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_killed_and_resumed_run_matches_uninterrupted(datasets: Path, tmp_path: Path, precision: str) -> None:
    """Pinned precision (the in-process run and the subprocess must compute alike on every CPU); bf16 autocast
    runs everywhere (emulated where not native) and is deterministic, so it resumes bit-exactly too."""
    data = _train_list(datasets, tmp_path)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    options = [*TINY, "--precision", precision]
    assert main(["train", str(data), "--out", str(straight), *options]) == 0
    losses = [float(row.split(",")[1]) for row in (straight / "metrics.csv").read_text().splitlines()[1:]]
    assert len(losses) == 8 and sum(losses[-3:]) / 3 < sum(losses[:2]) / 2, losses  # it learns
    assert json.loads((straight / "state.json").read_text())["scalars"]["precision"] == precision

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "unetkit.cli", "train", str(data), "--out", str(killed), *options],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while saved_step(killed) < 5 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stopped_at = saved_step(killed)
    assert 5 <= stopped_at < 40, f"the run was not killed midway (state at step {stopped_at})"

    assert main(["train", str(data), "--out", str(killed), "--resume"]) == 0
    assert saved_step(killed) == 40
    assert_same_last_weights(straight, killed)


def test_resume_without_state_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "run").mkdir()
    assert main(["train", "unused", "--out", str(tmp_path / "run"), "--resume"]) != 0
    assert "plan.yaml" in capsys.readouterr().err
