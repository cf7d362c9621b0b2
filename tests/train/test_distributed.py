"""Training under torchrun (DDP, Gloo on the CPU): two processes give the weights of one process that sees both
processes' batches, and only rank 0 writes the run."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from _run_state import assert_same_last_weights, saved_step
from safetensors.torch import load_file

from unetkit.config import Plan, apply_overrides
from unetkit.train import loop
from unetkit.train.distributed import DistContext, context_from_env
from unetkit.train.prefetch import batch_for_step, step_rng

# Group norm and a pixel-mean cross-entropy over patches without ignored pixels (no augmentation: rotations
# fill corners with the ignore index): the loss of a batch of 4 is then the mean of two batches of 2, so DDP's
# averaged gradients are exactly those of one process on the 4 patches (batch norm, a batch Dice or unequal
# counts of ignored pixels would couple the samples of a batch).
TINY = [
    "--value-map", "0:1,255:0",
    "--encoder", "plain",
    "--set", "model.kwargs.width=4",
    "--set", "model.kwargs.depth=2",
    "--set", "model.kwargs.norm=group",
    "--set", "train.patch_size=[64,64]",
    "--set", "train.batch_size=2",
    "--set", "train.time_budget_s=null",
    "--set", "train.steps=6",
    "--set", "train.val_every=3",
    "--set", "train.warmup_steps=2",
    "--set", "train.loss=ce",
    "--set", "train.augmentation=none",
    "--set", "train.align=false",
    "--set", "infer.tile_size=[128,128]",
]  # fmt: skip


def test_context_from_the_torchrun_environment() -> None:
    assert context_from_env({}) == DistContext(0, 1, 0)
    ctx = context_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.enabled, ctx.is_main) == (3, 4, 1, True, False)
    with pytest.raises(ValueError, match="inconsistent torchrun environment: RANK=4, WORLD_SIZE=4"):
        context_from_env({"RANK": "4", "WORLD_SIZE": "4"})
    with pytest.raises(ValueError, match="malformed torchrun environment"):
        context_from_env({"WORLD_SIZE": "two"})


def test_rank_zero_draws_the_one_process_batches_and_other_ranks_their_own() -> None:
    a = step_rng(seed=7, step=3).integers(0, 2**31, 4)
    np.testing.assert_array_equal(a, np.random.default_rng([7, 3]).integers(0, 2**31, 4))
    np.testing.assert_array_equal(step_rng(seed=7, step=3, rank=0).integers(0, 2**31, 4), a)
    np.testing.assert_array_equal(
        step_rng(seed=7, step=3, rank=1).integers(0, 2**31, 4), np.random.default_rng([7, 3, 1]).integers(0, 2**31, 4)
    )
    assert not np.array_equal(step_rng(seed=7, step=3, rank=1).integers(0, 2**31, 4), a)
    with pytest.raises(ValueError, match="rank"):
        step_rng(seed=0, step=0, rank=-1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    # Gloo on the loopback interface: a host name that does not resolve must not fail the test.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _train_list(datasets: Path, tmp_path: Path) -> Path:
    root = datasets / "isbi2012_em_membrane"
    path = tmp_path / "train.csv"
    path.write_text("image,mask\n" + "".join(f"{root}/images/{i}.png,{root}/masks/{i}.png\n" for i in range(5)))
    return path


class _BothRanks:
    """One process's batches as the concatenation of what ranks 0 and 1 draw at each step."""

    def __init__(self, batcher, *, seed: int, start: int, rank: int = 0, **_: object) -> None:  # type: ignore[no-untyped-def]
        self.batcher, self.seed, self.step = batcher, seed, start

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [batch_for_step(self.batcher, seed=self.seed, step=self.step, rank=r) for r in (0, 1)]
        self.step += 1
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def close(self) -> None:
        pass


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_two_processes_equal_one_process_on_both_batches_and_rank_zero_writes_the_run(
    datasets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, precision: str
) -> None:
    """fp32: equal to rounding (the all-reduce sums two half-batch gradients where one process sums four
    samples; the order of fp32 additions differs). bf16: see :func:`_bf16_tolerance`."""
    data = _train_list(datasets, tmp_path)
    run = tmp_path / "ddp"
    env = _env()
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
               f"--master_port={_free_port()}", "-m", "unetkit.cli", "train", str(data), "--out", str(run), *TINY,
               "--precision", precision]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    # Rank 0 reports once; the other process is silent.
    assert done.stdout.count("trained 6 steps") == 1, done.stdout
    assert {p.name for p in run.iterdir()} >= {"plan.yaml", "best", "last", "state.json", "metrics.csv"}
    assert len((run / "metrics.csv").read_text().splitlines()) == 1 + 2  # header + evaluations at steps 3 and 6

    # The same plan in one process, fed both ranks' batches at each step (batch of 4).
    monkeypatch.setattr(loop, "BatchStream", _BothRanks)
    reference = tmp_path / "one"
    loop.train(Plan.load(run / "plan.yaml"), reference)
    a = load_file(str(run / "last" / "model.safetensors"))
    b = load_file(str(reference / "last" / "model.safetensors"))
    assert a.keys() == b.keys()
    floats = [k for k in a if a[k].is_floating_point()]
    if precision == "fp32":
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)
        floor = 1e-5
    else:
        # bf16: the two runs round differently (each rank's convolutions see 2 samples, not 4, and the gradients are
        # summed in another order), and Adam turns every small gradient difference into an update difference of up
        # to the learning rate. So the bound is bf16's own noise floor, measured: the same one-process run in fp32
        # on the same batches ends a median `floor` away from the bf16 one; DDP may not add more than twice that.
        fp32 = tmp_path / "one_fp32"
        loop.train(apply_overrides(Plan.load(run / "plan.yaml"), ["train.precision=fp32"]), fp32)
        d = load_file(str(fp32 / "last" / "model.safetensors"))
        floor = _median_abs_diff(b, d, floats)
        assert _median_abs_diff(a, b, floats) <= 2 * floor, (_median_abs_diff(a, b, floats), floor)
    # Rank 1's batches count: one process on rank 0's batches alone ends elsewhere, well beyond the tolerance.
    monkeypatch.undo()
    alone = tmp_path / "rank0"
    loop.train(Plan.load(run / "plan.yaml"), alone)
    c = load_file(str(alone / "last" / "model.safetensors"))
    assert max(float((a[k] - c[k]).abs().max()) for k in floats) > 1e-3
    assert _median_abs_diff(a, c, floats) > 3 * floor


def _median_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], keys: list[str]) -> float:
    """Median over every weight of |a - b| (robust to the few weights whose Adam step flips sign)."""
    return float(torch.cat([(a[k] - b[k]).abs().flatten() for k in keys]).median())


def test_a_killed_two_process_run_resumes_to_the_same_weights(datasets: Path, tmp_path: Path) -> None:
    psutil = pytest.importorskip("psutil")
    data = _train_list(datasets, tmp_path)
    # Batch norm and the data's augmentation this time: what a real run has.
    options = [
        "--value-map", "0:1,255:0", "--encoder", "plain", "--set", "model.kwargs.width=4",
        "--set", "train.patch_size=[64,64]", "--set", "train.batch_size=2", "--set", "train.time_budget_s=null",
        "--set", "train.steps=30", "--set", "train.val_every=5", "--set", "train.align=false",
        "--precision", "fp32",  # an exactness test: the same arithmetic on every CPU
    ]  # fmt: skip

    def torchrun(*args: str) -> subprocess.Popen:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
                   f"--master_port={_free_port()}", "-m", "unetkit.cli", "train", str(data), *args]
        return subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)

    straight, killed = tmp_path / "straight", tmp_path / "killed"
    first = torchrun("--out", str(straight), *options)
    _, err = first.communicate(timeout=600)
    if first.returncode != 0 and "Signal 6 (SIGABRT)" in err:
        # Seen once in ~10 full-suite runs: a worker aborted in native code (Gloo/loader teardown) while the
        # reference run ran; the reference is only what the killed run is compared with, so it is run again.
        first = torchrun("--out", str(straight), "--overwrite", *options)
        _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-3000:]
    proc = torchrun("--out", str(killed), *options)
    deadline = time.monotonic() + 300
    while saved_step(killed) < 10 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    # torchrun starts its workers in sessions of their own: kill the agent and every process below it.
    agent = psutil.Process(proc.pid)
    tree = [*agent.children(recursive=True), agent]
    for p in tree:
        p.send_signal(signal.SIGKILL)
    proc.communicate()
    psutil.wait_procs(tree, timeout=30)
    stopped_at = saved_step(killed)
    assert 10 <= stopped_at < 30, f"the run was not killed midway (state at step {stopped_at})"
    resumed = torchrun("--out", str(killed), "--resume")
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-3000:]
    assert saved_step(killed) == 30
    assert_same_last_weights(straight, killed)
