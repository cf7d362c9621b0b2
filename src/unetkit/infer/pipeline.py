"""Predicting many files at full speed: decode ahead, compute, write behind.

::

    reader threads --(prefetch: at most N decoded ahead)--> this thread: the network --(backlog)--> writer threads

:func:`predict_files` runs the steps of :func:`unetkit.infer.files.predict_file` (read the file, predict it,
write its outputs to temporary names renamed into place) for a list of inputs, with the reading of the next
files and the writing of the previous ones overlapping the network's work. The outputs are the files the
one-at-a-time loop (:func:`predict_sequential`) writes, byte for byte: each image goes through the same code,
alone. Memory stays bounded: at most ``prefetch`` images are decoded ahead and at most ``backlog`` finished
predictions wait for their writer.

With ``batch_images``, consecutive images of one shape that each fit in a single tile (``plan.infer.tile_size``)
share network batches (up to ``infer.batch_size`` images): fewer, larger network calls, which should matter more
on a GPU than on a CPU (not measured on a GPU yet). Each image's padded tile is exactly the one it gets alone and
its blend runs the same code, but a network batch of several images is not computed bit for bit like a batch of
one (oneDNN picks other kernels by batch size), so probabilities may differ in the last float bits (about 1e-7
in fp32) and a pixel whose probability is that close to the threshold may change class. Hence it is an option,
not the default.

Either way the outcomes come back in input order, one :class:`FileOutcome` per input, a failed input carrying
its error (one of :data:`FILE_ERRORS`), so a caller prints the same lines in the same order as the loop.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from unetkit.data.io import ImageData
from unetkit.infer.files import (
    claim_outputs,
    output_paths,
    predict_file,
    predict_pixels,
    read_input,
    write_outputs,
)
from unetkit.infer.predictor import Prediction, blended_probabilities, to_prediction
from unetkit.runtime.tiling import fits_one_tile, pad_to_tile, pass_tiles

# What a bad input raises (unreadable, unsupported, wrong channels, a write that failed): reported and skipped.
FILE_ERRORS = (ValueError, OSError, RuntimeError)

Windowed = Callable[[Path], bool]


@dataclass(frozen=True)
class FileJob:
    """One input: the outputs it gets, or why it gets none (the error of :func:`output_paths` / claiming)."""

    path: Path
    targets: dict[str, Path] | None = None
    error: Exception | None = None


@dataclass(frozen=True)
class FileOutcome:
    """What became of one input: the paths written, or the error that stopped it."""

    path: Path
    written: tuple[Path, ...] = ()
    error: Exception | None = None


@dataclass(frozen=True)
class PipelineOptions:
    """Sizes of the pipeline: threads per pool, images decoded ahead, predictions waiting to be written."""

    readers: int = 2
    writers: int = 2
    prefetch: int = 4
    backlog: int = 4
    batch_images: bool = False
    # torch's threads while the pipeline runs on a CPU; None = one fewer than torch has (at least 1), so that a
    # core is left to decoding and encoding: on 2 cores, 1 compute thread + the readers / writers ran 60 ISBI
    # slices at 10.8-11.1 images/s against 6.8-7.6 with 2 compute threads (the threads fought over the cores).
    compute_threads: int | None = None

    def __post_init__(self) -> None:
        for name in ("readers", "writers", "prefetch", "backlog"):
            if getattr(self, name) < 1:
                raise ValueError(f"pipeline {name} must be >= 1, got {getattr(self, name)}")


def plan_jobs(files: Sequence[Path], out: Path, *, prob: bool, uncertainty: bool, overlay: bool) -> list[FileJob]:
    """The outputs of every input, refusing those that would overwrite an input or an earlier input's outputs.

    Deterministic, so processes that each take a share of the list (:func:`unetkit.ranks.shard`) agree on it.
    """
    claimed = {p.resolve() for p in files}
    jobs = []
    for path in files:
        try:
            targets = output_paths(path, out, prob=prob, uncertainty=uncertainty, overlay=overlay)
            claim_outputs(path, targets, claimed)
        except ValueError as err:
            jobs.append(FileJob(path, error=err))
            continue
        jobs.append(FileJob(path, targets))
    return jobs


def skip_complete(jobs: Sequence[FileJob]) -> tuple[list[FileJob], list[FileJob]]:
    """``(to_do, skipped)``: the jobs with an output missing, and those whose every output already exists.

    Each output is renamed into place only once complete, so an existing file is a complete one; an input
    with some outputs missing (a killed run stopped between its files) is redone whole. The temporary files a
    killed writer left beside a redone input's outputs are deleted.
    """
    from unetkit._io import stale_temporaries

    to_do, skipped = [], []
    for job in jobs:
        if job.targets and all(t.is_file() for t in job.targets.values()):
            skipped.append(job)
            continue
        for target in (job.targets or {}).values():
            for leftover in stale_temporaries(target):
                leftover.unlink(missing_ok=True)
        to_do.append(job)
    return to_do, skipped


def predict_sequential(  # type: ignore[no-untyped-def]
    predictor, jobs: Sequence[FileJob], *, windowed: Windowed | None = None
) -> Iterator[FileOutcome]:
    """One file after the other with :func:`predict_file` (read, predict, write); ``windowed(path)`` picks the
    inputs predicted window by window."""
    for job in jobs:
        try:
            if job.error is not None:
                raise job.error
            assert job.targets is not None
            written = predict_file(predictor, job.path, job.targets, windowed=bool(windowed and windowed(job.path)))
        except FILE_ERRORS as err:
            yield FileOutcome(job.path, error=err)
            continue
        yield FileOutcome(job.path, tuple(written))


def predict_files(  # type: ignore[no-untyped-def]
    predictor, jobs: Sequence[FileJob], *, windowed: Windowed | None = None, options: PipelineOptions | None = None
) -> Iterator[FileOutcome]:
    """The outcomes of :func:`predict_sequential`, in the same order, with reading and writing in threads.

    Inputs that ``windowed`` picks are predicted window by window (they read and write as they go) after
    every earlier outcome has been given, as in the loop. Closing the iterator early cancels the reads and
    writes not yet started; writes already started complete (each is atomic either way).
    """
    options = options or PipelineOptions()
    with _compute_threads(predictor, options.compute_threads):
        yield from _pipeline(predictor, jobs, windowed, options)


@contextlib.contextmanager
def _compute_threads(predictor, threads: int | None) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """torch's intra-op threads set to ``threads`` (None: one fewer, at least 1) on a CPU, restored after."""
    before = torch.get_num_threads()
    if getattr(predictor, "device", torch.device("cpu")).type != "cpu":
        yield
        return
    torch.set_num_threads(threads if threads is not None else max(1, before - 1))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _pipeline(predictor, jobs: Sequence[FileJob], windowed: Windowed | None,  # type: ignore[no-untyped-def]
              options: PipelineOptions) -> Iterator[FileOutcome]:
    readers = ThreadPoolExecutor(options.readers, thread_name_prefix="unetkit-read")
    writers = ThreadPoolExecutor(options.writers, thread_name_prefix="unetkit-write")
    ahead = _ReadAhead(readers, jobs, windowed, depth=options.prefetch)
    results = _InOrder(backlog=options.backlog)
    try:
        while (item := ahead.pop()) is not None:
            job, future = item
            try:
                loaded = future.result()
            except FILE_ERRORS as err:
                results.add_outcome(FileOutcome(job.path, error=err))
                yield from results.ready()
                continue
            if loaded is None:  # window by window, in this thread, after the outcomes before it
                yield from results.flush()
                yield from predict_sequential(predictor, [job], windowed=lambda _path: True)
                continue
            group = [(job, loaded)]
            if options.batch_images and _batchable(predictor, loaded[1]):
                group += ahead.pop_same_shape(loaded[1].shape, limit=predictor.infer.batch_size - 1)
            predictions = _predict_group(predictor, [(pixels, image.meta.get("spacing")) for _, (image, pixels) in group])
            for (member, (image, _)), result in zip(group, predictions, strict=True):
                if isinstance(result, Exception):
                    results.add_outcome(FileOutcome(member.path, error=result))
                else:
                    assert member.targets is not None  # a job with targets=None has an error, which _load raised
                    write = writers.submit(write_outputs, member.path, member.targets, image, result,
                                           background=predictor.plan.data.background)
                    results.add_write(member.path, write)
            yield from results.ready()
        yield from results.flush()
    finally:
        readers.shutdown(wait=True, cancel_futures=True)
        writers.shutdown(wait=True, cancel_futures=True)


Decoded = tuple[ImageData, np.ndarray]  # the image as read, and its pixels as float32
Loaded = Decoded | None  # None: predict window by window


def _load(job: FileJob, windowed: Windowed | None) -> Loaded:
    if job.error is not None:
        raise job.error
    if windowed is not None and windowed(job.path):
        return None
    return read_input(job.path)


class _ReadAhead:
    """The jobs in order, each with its read submitted while up to ``depth`` jobs before it are still queued."""

    def __init__(self, pool: ThreadPoolExecutor, jobs: Sequence[FileJob], windowed: Windowed | None, *,
                 depth: int) -> None:
        self._pool, self._windowed, self._depth = pool, windowed, depth
        self._jobs = iter(jobs)
        self._queue: collections.deque[tuple[FileJob, Future[Loaded]]] = collections.deque()
        self._fill()

    def _fill(self) -> None:
        while len(self._queue) < self._depth and (job := next(self._jobs, None)) is not None:
            self._queue.append((job, self._pool.submit(_load, job, self._windowed)))

    def pop(self) -> tuple[FileJob, Future[Loaded]] | None:
        if not self._queue:
            return None
        item = self._queue.popleft()
        self._fill()
        return item

    def pop_same_shape(self, shape: tuple[int, ...], *, limit: int) -> list[tuple[FileJob, Decoded]]:
        """Up to ``limit`` next jobs, as long as they read fine as images of ``shape`` (waits for their reads)."""
        taken: list[tuple[FileJob, Decoded]] = []
        while len(taken) < limit and self._queue:
            job, future = self._queue[0]
            try:
                loaded = future.result()
            except FILE_ERRORS:
                break  # reported when popped
            if loaded is None or loaded[1].shape != shape:
                break
            taken.append((job, loaded))
            self.pop()
        return taken


class _InOrder:
    """Outcomes given in input order, each as soon as it and all before it are known; at most ``backlog``
    writes wait (the oldest is waited for beyond that, which bounds the memory held by finished predictions)."""

    def __init__(self, *, backlog: int) -> None:
        self._backlog = backlog
        self._items: collections.deque[FileOutcome | tuple[Path, Future[list[Path]]]] = collections.deque()

    def add_outcome(self, outcome: FileOutcome) -> None:
        self._items.append(outcome)

    def add_write(self, path: Path, future: Future[list[Path]]) -> None:
        self._items.append((path, future))

    def ready(self) -> Iterator[FileOutcome]:
        while self._items and (len(self._items) > self._backlog or _done(self._items[0])):
            yield self._next()

    def flush(self) -> Iterator[FileOutcome]:
        while self._items:
            yield self._next()

    def _next(self) -> FileOutcome:
        item = self._items.popleft()
        if isinstance(item, FileOutcome):
            return item
        path, future = item
        try:
            return FileOutcome(path, tuple(future.result()))
        except FILE_ERRORS as err:
            return FileOutcome(path, error=err)


def _done(item: FileOutcome | tuple[Path, Future[list[Path]]]) -> bool:
    return isinstance(item, FileOutcome) or item[1].done()


def _batchable(predictor, pixels: np.ndarray) -> bool:  # type: ignore[no-untyped-def]
    """Whether ``pixels`` (C, *spatial) is predicted as one tile, so that it can share a batch."""
    infer = predictor.infer
    if predictor.plan.data.target_spacing is not None:
        return False  # each volume may first be resampled to another shape
    if pixels.ndim != len(infer.tile_size) + 1:
        return False
    tile, _ = pass_tiles(pixels.shape[1:], infer.tile_size, max_pass_pixels=infer.max_pass_pixels,
                         batch_size=infer.batch_size)
    return fits_one_tile(pixels.shape[1:], tile)


def _predict_group(  # type: ignore[no-untyped-def]
    predictor, inputs: list[tuple[np.ndarray, Sequence[float] | None]]
) -> list[Prediction | Exception]:
    """A prediction (or the error) per ``(image, voxel spacing)``: several in shared batches where that works, else
    one at a time."""
    if len(inputs) > 1:
        try:
            return list(_predict_together(predictor, [image for image, _ in inputs]))
        except Exception:
            # E.g. the wrong number of channels, which the network reports in its own words: one at a time then
            # reports (or raises) exactly as the loop does.
            pass
    results: list[Prediction | Exception] = []
    for image, spacing in inputs:
        try:
            results.append(predict_pixels(predictor, image, spacing))
        except FILE_ERRORS as err:
            results.append(err)
    return results


@torch.inference_mode()
def _predict_together(predictor, images: list[np.ndarray]) -> list[Prediction]:  # type: ignore[no-untyped-def]
    """Predict same-shape one-tile images with their tiles in one network batch.

    Each image's tile is the one :func:`sliding_window_predict` would send alone (:func:`pad_to_tile` of the
    normalised image); its network output is then blended by :func:`blended_probabilities` itself, given a
    tile function that checks it receives that very tile and returns the batched output for it.
    """
    from unetkit.data.normalize import normalize_for

    plan, infer = predictor.plan, predictor.infer
    tile, batch = pass_tiles(images[0].shape[1:], infer.tile_size, max_pass_pixels=infer.max_pass_pixels,
                             batch_size=infer.batch_size)
    tiles = torch.stack([pad_to_tile(torch.from_numpy(normalize_for(image, plan.data)), tile) for image in images])
    fn = predictor.tile_fn()
    outputs = torch.cat([fn(tiles[i : i + batch]) for i in range(0, len(images), batch)])

    def replay(index: int) -> Callable[[torch.Tensor], torch.Tensor]:
        def tile_output(batch: torch.Tensor) -> torch.Tensor:
            if batch.shape[0] != 1 or not torch.equal(batch[0], tiles[index]):
                raise RuntimeError("internal: a one-tile image was tiled differently than when batched")
            return outputs[index : index + 1]

        return tile_output

    results = []
    for i, image in enumerate(images):
        probs, uncertainty = blended_probabilities(replay(i), image, plan, infer,
                                                   uncertainty=predictor.with_uncertainty)
        results.append(to_prediction(probs, uncertainty, infer))
    return results
