"""The one entry point for predicting files: :func:`predict_paths`.

Files, folders (their image files, sorted) and globs go in; each input, whether a 2D image, a volume or a GeoTIFF
raster of any size, gets its outputs written beside the others in one folder, each file renamed into place only
once complete. Everything else in :mod:`unetkit.infer` that touches files is a building block of this function:

* :func:`unetkit.infer.files.expand_inputs` turns the inputs into files;
* :func:`unetkit.infer.pipeline.plan_jobs` names each file's outputs (refusing one that would overwrite an input)
  and :func:`~unetkit.infer.pipeline.skip_complete` drops those already written;
* :func:`unetkit.infer.pipeline.predict_files` (or :func:`~unetkit.infer.pipeline.predict_sequential`) reads,
  predicts and writes them, sending large GeoTIFFs to :func:`unetkit.infer.raster.predict_raster` window by window.

``unetkit predict``, the web service and the Ray engine's driver all go through here, so they name, skip and
window inputs the same way. (An array already in memory is predicted by calling the
:class:`~unetkit.infer.predictor.Predictor` itself.)

Example:
    >>> from unetkit.infer.paths import PathRequest, predict_paths
    >>> run = predict_paths(predictor, PathRequest(inputs=("scans/",), out=Path("pred")))  # doctest: +SKIP
    >>> failed = [o for o in run.outcomes if o.error is not None]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unetkit.data.io import full_suffix
from unetkit.infer.files import expand_inputs
from unetkit.infer.pipeline import (
    FileJob,
    FileOutcome,
    PipelineOptions,
    plan_jobs,
    predict_files,
    predict_sequential,
    skip_complete,
)
from unetkit.infer.raster import DEFAULT_WINDOWED_PIXELS, is_large_raster

Share = Callable[[list[FileJob]], list[FileJob]]


@dataclass(frozen=True)
class PathRequest:
    """What to predict and what to write.

    Attributes:
        inputs: files, folders and globs (see :func:`unetkit.infer.files.expand_inputs`).
        out: the folder every output goes to (created if missing).
        prob: also write the class probabilities of each input.
        uncertainty: also write the per-pixel uncertainty (needs test-time augmentation).
        overlay: also write an overlay PNG of each 2D input.
        skip_existing: leave out the inputs whose every output already exists (a killed run's complete ones).
        window_threshold: a 2D GeoTIFF with more pixels than this is predicted window by window (memory
            independent of its size); 0 = every GeoTIFF; None = none (each input read whole).
        sequential: one input after the other, no reader/writer threads.
        pipeline: thread pools and queue depths of the overlapped reading, predicting and writing.
    """

    inputs: tuple[str, ...]
    out: Path
    prob: bool = False
    uncertainty: bool = False
    overlay: bool = True
    skip_existing: bool = False
    window_threshold: int | None = DEFAULT_WINDOWED_PIXELS
    sequential: bool = False
    pipeline: PipelineOptions = field(default_factory=PipelineOptions)


@dataclass(frozen=True)
class PathPlan:
    """The inputs of a request, planned.

    Attributes:
        planned: every input of this process's share, with its outputs (or why it gets none).
        to_do: the planned inputs left to predict (all of them unless ``skip_existing``).
        skipped: the planned inputs whose outputs all exist.
    """

    planned: list[FileJob]
    to_do: list[FileJob]
    skipped: list[FileJob]


@dataclass(frozen=True)
class PathRun(PathPlan):
    """A request under way: its plan, and the outcomes, given lazily in input order as each input finishes
    (iterate them to do the work; stopping early cancels the inputs not started).

    Attributes:
        outcomes: one :class:`~unetkit.infer.pipeline.FileOutcome` per input of ``to_do``.
    """

    outcomes: Iterator[FileOutcome]


def plan_paths(request: PathRequest, *, share: Share | None = None) -> PathPlan:
    """Expand, name and (with ``skip_existing``) skip the inputs of ``request``; nothing is read or written.

    Args:
        request: the inputs and outputs.
        share: picks this process's share of the planned inputs (e.g. :func:`unetkit.ranks.shard` under
            torchrun); every process plans every input first, so all agree on names and refusals.

    Raises:
        FileNotFoundError: an input that is no file, folder or matching glob, or no image found at all.
    """
    request.out.mkdir(parents=True, exist_ok=True)
    jobs = plan_jobs(expand_inputs(list(request.inputs)), request.out, prob=request.prob,
                     uncertainty=request.uncertainty, overlay=request.overlay)  # fmt: skip
    planned = share(jobs) if share is not None else jobs
    to_do, skipped = skip_complete(planned) if request.skip_existing else (planned, [])
    return PathPlan(planned=planned, to_do=to_do, skipped=skipped)


def predict_paths(predictor: Any, request: PathRequest, *, share: Share | None = None) -> PathRun:
    """Predict the files, folders and globs of ``request`` with ``predictor`` and write their outputs.

    Args:
        predictor: a :class:`~unetkit.infer.predictor.Predictor` (or an ensemble, or anything called the same way).
        request: the inputs and outputs.
        share: this process's share of the inputs, as in :func:`plan_paths`.

    Returns:
        A :class:`PathRun`; its ``outcomes`` do the work as they are iterated. A bad input (unreadable,
        unsupported, wrong channels, an output that would overwrite an input) is an outcome with its error,
        not an exception: the other inputs are still predicted.

    Raises:
        FileNotFoundError: as :func:`plan_paths`.
    """
    plan = plan_paths(request, share=share)

    def windowed(path: Path) -> bool:
        return is_windowed(path, spatial_dims=predictor.spatial_dims, threshold=request.window_threshold)

    chooser = windowed if request.window_threshold is not None else None
    if request.sequential:
        outcomes = predict_sequential(predictor, plan.to_do, windowed=chooser)
    else:
        outcomes = predict_files(predictor, plan.to_do, windowed=chooser, options=request.pipeline)
    return PathRun(planned=plan.planned, to_do=plan.to_do, skipped=plan.skipped, outcomes=outcomes)


def is_windowed(path: Path, *, spatial_dims: int, threshold: int | None) -> bool:
    """Whether ``path`` is predicted window by window: a GeoTIFF, for a 2D model, above ``threshold`` pixels
    (0: every GeoTIFF; None: never)."""
    if threshold is None or spatial_dims != 2 or full_suffix(path) not in (".tif", ".tiff"):
        return False
    return is_large_raster(path, threshold_pixels=threshold)


__all__ = ["PathPlan", "PathRequest", "PathRun", "is_windowed", "plan_paths", "predict_paths"]
