"""Batches are a pure function of (seed, step): worker processes give exactly the serial batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from unetkit.cli import main
from unetkit.config import Plan, apply_overrides
from unetkit.data.transforms import build_augmentation
from unetkit.runtime.examples import Example
from unetkit.train.batches import PatchBatcher
from unetkit.train.loop import train
from unetkit.train.prefetch import BatchStream, batch_for_step, step_rng


def _batcher() -> PatchBatcher:
    gen = np.random.default_rng(0)
    examples = []
    for i in range(3):
        mask = np.zeros((40, 40), dtype=np.int64)
        mask[5 + i : 15 + i, 10:20] = 1
        examples.append(Example(key=str(i), image=gen.normal(size=(1, 40, 40)).astype(np.float32), mask=mask))
    return PatchBatcher(
        examples,
        patch_size=(16, 16),
        batch_size=3,
        foreground_fraction=0.5,
        augment=build_augmentation("default", patch_size=(16, 16)),
    )


def test_step_generator_is_seeded_by_seed_and_step_only() -> None:
    expected = np.random.default_rng([3, 7]).integers(1 << 30, size=4)
    np.testing.assert_array_equal(step_rng(seed=3, step=7).integers(1 << 30, size=4), expected)
    assert not np.array_equal(step_rng(seed=3, step=8).integers(1 << 30, size=4), expected)
    with pytest.raises(ValueError, match="non-negative"):
        step_rng(seed=-1, step=0)


# torch warns when there are more workers than CPUs this process may use (the test may run pinned to one).
@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")
def test_two_workers_give_the_serial_batches_bit_for_bit() -> None:
    batcher = _batcher()
    serial = BatchStream(batcher, seed=11, start=5, workers=0)
    parallel = BatchStream(batcher, seed=11, start=5, workers=2)
    try:
        got_serial = [next(serial) for _ in range(6)]
        got_parallel = [next(parallel) for _ in range(6)]
    finally:
        parallel.close()
    x5, y5 = batch_for_step(batcher, seed=11, step=5)  # a stream started at 5 begins with step 5's batch
    assert torch.equal(got_serial[0][0], x5) and torch.equal(got_serial[0][1], y5)
    assert not torch.equal(got_serial[0][0], got_serial[1][0])  # steps differ
    for (xs, ys), (xp, yp) in zip(got_serial, got_parallel, strict=True):
        assert xs.dtype == xp.dtype == torch.float32 and ys.dtype == yp.dtype == torch.int64
        assert torch.equal(xs, xp) and torch.equal(ys, yp)


@pytest.mark.parametrize("workers", [-1, 1.5, True])
def test_bad_worker_count_is_a_clear_error(workers: object) -> None:
    with pytest.raises(ValueError, match="train.workers"):
        BatchStream(_batcher(), seed=0, start=0, workers=workers)  # type: ignore[arg-type]


@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")
def test_run_with_workers_stopped_and_resumed_matches_serial_run(datasets: Path, tmp_path: Path) -> None:
    root = datasets / "isbi2012_em_membrane"
    data = tmp_path / "train.csv"
    data.write_text(
        "image,mask\n" + "".join(f"{root}/images/{i}.png,{root}/masks/{i}.png\n" for i in range(4))
    )
    tiny = ["--value-map", "0:1,255:0", "--encoder", "plain", "--set", "model.kwargs.width=4", "--set", "model.kwargs.depth=3",
            "--set", "train.patch_size=[64,64]", "--set", "train.batch_size=2", "--set", "train.time_budget_s=null",
            "--set", "train.steps=12", "--set", "train.val_every=4", "--set", "train.warmup_steps=3",
            "--set", "infer.tile_size=[128,128]"]  # fmt: skip
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    assert main(["train", str(data), "--out", str(serial), *tiny]) == 0

    plan = apply_overrides(Plan.load(serial / "plan.yaml"), ["train.workers=2"])
    assert train(plan, parallel, stop_after=6).steps == 6  # stops with workers still prefetching
    assert main(["train", str(data), "--out", str(parallel), "--resume"]) == 0  # plan.yaml says workers=2
    a = load_file(str(serial / "last" / "model.safetensors"))
    b = load_file(str(parallel / "last" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


class _AbortsAtWorkerExit(PatchBatcher):
    """A batcher whose copy in a worker process aborts (SIGABRT) when that worker exits."""

    def __setstate__(self, state: dict) -> None:
        import multiprocessing.util
        import os

        self.__dict__.update(state)
        multiprocessing.util.Finalize(None, os.abort, exitpriority=100)  # runs as the worker process exits


def test_a_worker_dying_as_it_exits_does_not_fail_close() -> None:
    plain = _batcher()
    batcher = _AbortsAtWorkerExit.__new__(_AbortsAtWorkerExit)
    batcher.__dict__.update(plain.__dict__)
    stream = BatchStream(batcher, seed=3, start=0, workers=2)
    got = [next(stream) for _ in range(3)]
    stream.close()  # both workers abort while exiting: no error, and no worker left behind
    import multiprocessing

    assert not [p for p in multiprocessing.active_children() if p.is_alive()]
    for step, (x, y) in enumerate(got):
        ex, ey = batch_for_step(plain, seed=3, step=step)
        assert torch.equal(x, ex) and torch.equal(y, ey)
