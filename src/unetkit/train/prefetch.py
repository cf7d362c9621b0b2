"""Training batches as a pure function of ``(seed, step)``, optionally prepared ahead by worker processes.

The batch for step ``s`` is ``batcher.next(np.random.default_rng([seed, s]))``: every step has its own
generator, seeded from the pair through numpy's ``SeedSequence`` (well-separated streams for
neighbouring steps), and nothing carries over from one step to the next. So

- worker processes can build batches ahead of time, in any order, and the result is bit-identical to
  building them one by one in the main process;
- ``--resume`` needs only the step number to continue with exactly the batches an uninterrupted run
  would have seen (no sampler state is saved).

With ``workers > 0`` a :class:`torch.utils.data.DataLoader` over the step indices does the work: each
worker process holds a copy of the in-memory examples, about ``2 * workers`` batches are in flight,
and batches come back strictly in step order (the DataLoader re-orders them). One loader lives for the
whole run (its step sampler never ends), so there are no epoch boundaries and workers start once.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from unetkit.train.batches import PatchBatcher

if TYPE_CHECKING:
    from unetkit.train.semisup import SemiBatcher

# (x, y), or (x, y, weak, strong) with unlabelled views (unetkit.train.semisup.SemiBatcher)
Batch = tuple[torch.Tensor, ...]


def step_rng(*, seed: int, step: int, rank: int = 0) -> np.random.Generator:
    """The generator that draws the batch of step ``step``: ``np.random.default_rng([seed, step])``, and for
    distributed process ``rank > 0`` ``default_rng([seed, step, rank])`` (rank 0 draws a one-process run's batches).

    Raises:
        ValueError: ``seed``, ``step`` or ``rank`` is negative (``SeedSequence`` takes non-negative integers).
    """
    if seed < 0 or step < 0 or rank < 0:
        raise ValueError(f"seed ({seed}), step ({step}) and rank ({rank}) must be non-negative integers")
    key = [int(seed), int(step)] + ([int(rank)] if rank else [])
    return np.random.default_rng(key)


def batch_for_step(batcher: PatchBatcher | SemiBatcher, *, seed: int, step: int, rank: int = 0) -> Batch:
    """The batch of step ``step`` (for process ``rank``): ``x (B, C, *patch)`` float32, ``y (B, *patch)`` int64."""
    return batcher.next(step_rng(seed=seed, step=step, rank=rank))


class BatchStream:
    """The batches of steps ``start, start + 1, ...`` in order; ``next(stream)`` gives the next one.

    Args:
        batcher: draws one batch from a generator.
        seed: the run's seed.
        start: the first step (the resume point).
        rank: the distributed process (0 in a one-process run); each rank draws its own batches.
        workers: 0 builds each batch in the calling process when it is asked for; ``N > 0`` uses
            ``N`` worker processes that keep about ``2 * N`` batches ready.
        pin_memory: page-locked batches (for CUDA: copies with ``non_blocking=True`` overlap compute).

    Raises:
        ValueError: ``workers`` is negative or not an integer.
    """

    def __init__(
        self,
        batcher: PatchBatcher | SemiBatcher,
        *,
        seed: int,
        start: int,
        workers: int = 0,
        pin_memory: bool = False,
        rank: int = 0,
    ) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise ValueError(
                f"train.workers must be an integer >= 0 (0 = load in the main process), got {workers!r}"
            )
        step_rng(seed=seed, step=start, rank=rank)  # validates seed, start and rank before any worker starts
        self.pin_memory = pin_memory
        self._iterator: Iterator[Batch]
        self._loader: DataLoader | None = None
        if workers == 0:
            self._iterator = (
                batch_for_step(batcher, seed=seed, step=s, rank=rank) for s in itertools.count(start)
            )
            return
        self._loader = DataLoader(
            _StepBatches(batcher, seed=seed, rank=rank),
            batch_size=None,  # each item already is a batch
            sampler=_Steps(start),
            num_workers=workers,
            pin_memory=pin_memory,
            prefetch_factor=2,
            worker_init_fn=_init_worker,
            # Fresh worker processes: a forked copy of a parent whose OpenCV / OpenMP thread pools are already
            # running deadlocks (seen: cv2.setNumThreads in a forked worker hung the test suite).
            multiprocessing_context="spawn",
            persistent_workers=True,
        )
        self._iterator = iter(self._loader)

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> Batch:
        return tuple(next(self._iterator))

    def close(self) -> None:
        """Stop the worker processes (also done when the stream is garbage-collected)."""
        shutdown = getattr(self._iterator, "_shutdown_workers", None)
        if shutdown is not None:
            try:
                shutdown()
            except RuntimeError as err:
                # A worker that dies while exiting (seen once in ~30 test runs: "terminate called without an active
                # exception", SIGABRT from native code torn down at exit) has delivered every batch asked of it; its
                # exit status no longer matters, and torch's shutdown still terminates and reaps the others.
                if "DataLoader worker" not in str(err):
                    raise
        self._iterator = iter(())
        self._loader = None


class _StepBatches(Dataset):
    """Map-style dataset: item ``s`` is the batch of step ``s``."""

    def __init__(self, batcher: PatchBatcher | SemiBatcher, *, seed: int, rank: int = 0) -> None:
        self.batcher = batcher
        self.seed = seed
        self.rank = rank

    def __getitem__(self, step: int) -> Batch:
        return batch_for_step(self.batcher, seed=self.seed, step=step, rank=self.rank)


class _Steps(Sampler[int]):
    """Step indices from ``start`` on, without end (the loop decides when to stop)."""

    def __init__(self, start: int) -> None:
        self.start = start

    def __iter__(self) -> Iterator[int]:
        return itertools.count(self.start)


def _init_worker(_worker_id: int) -> None:
    # The loader already limits torch to one thread per worker; OpenCV (albumentations) would otherwise
    # start a thread pool per worker and oversubscribe the cores the training process needs.
    cv2 = sys.modules.get("cv2")
    if cv2 is not None:
        cv2.setNumThreads(1)
