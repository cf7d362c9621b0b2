"""Predict (Geo)TIFF rasters larger than memory: read, normalise, predict and write window by window.

Two streaming passes over the file, each holding one window at a time:

1. **Statistics.** The per-channel statistics that :func:`unetkit.data.normalize.normalize` would compute on
   the whole image (``zscore``: mean and population std; ``minmax``: min and max) are accumulated over
   blocks in float64 (means and squared deviations merged with Chan's parallel formula, which stays accurate
   for any number of pixels). Normalising every window with these *global* statistics gives the same
   network input as normalising the whole raster in memory; per-window statistics would not.
2. **Prediction.** :func:`unetkit.runtime.tiling.predict_raster_windows` reads each chunk plus its halo,
   predicts the tiles of the global grid that touch it, blends them and hands back the chunk's probabilities,
   which are turned into labels (argmax, or ``p > threshold`` for one channel) and written into the label
   raster with :class:`unetkit.data.geotiff.GeoTiffWriter` (optionally also probabilities and uncertainty).

Memory is bounded by the window size (``window`` pixels a side, about 2048 by default), not the raster.
Outputs keep the source's CRS and transform, are written to temporary files and renamed into place only
when every window succeeded; after an error nothing is left behind and existing outputs are untouched.
Small-component removal (``min_size``) needs whole components and is not applied here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unetkit.data.io import Window, full_suffix
from unetkit.runtime.run import input_channels, output_classes

DEFAULT_WINDOWED_PIXELS = 4096 * 4096
TIFF_SUFFIXES = (".tif", ".tiff")
_EPS = 1e-6  # as in unetkit.data.normalize


@dataclass(frozen=True)
class ChannelStats:
    """Per-channel affine normalisation ``(x - shift) / scale`` equal to ``normalize`` on the whole image.

    Attributes:
        shift, scale: float64 ``(C,)``; ``scale`` is already clamped to at least ``1e-6``.
    """

    shift: np.ndarray
    scale: np.ndarray

    def apply(self, window: np.ndarray) -> np.ndarray:
        """float32 ``(C, h, w)`` normalised window (computed like ``normalize``: float32 arithmetic)."""
        x = window.astype(np.float32, copy=True)
        x -= self.shift.astype(np.float32)[:, None, None]
        x /= self.scale.astype(np.float32)[:, None, None]
        return x


def iter_windows(height: int, width: int, size: int) -> Iterator[Window]:
    """``(row, col, h, w)`` blocks of at most ``size x size`` covering a ``height x width`` raster, row-major."""
    if size < 1:
        raise ValueError(f"window size must be >= 1, got {size}")
    for row in range(0, height, size):
        for col in range(0, width, size):
            yield row, col, min(size, height - row), min(size, width - col)


def raster_stats(
    path: str | Path, *, mode: str, block: int = 1024, mean: Sequence[float] = (), std: Sequence[float] = ()
) -> ChannelStats:
    """Stream over ``path`` in ``block x block`` windows and return the whole-image normalisation.

    Args:
        path: a single-page (Geo)TIFF.
        mode: ``zscore``, ``dataset``, ``minmax`` or ``none`` (as :func:`unetkit.data.normalize.normalize`);
            ``dataset`` and ``none`` read only the header.
        block: window side for the pass (memory ~ ``C * block**2 * 8`` bytes).
        mean, std: ``dataset`` mode: the plan's per-channel statistics.

    Raises:
        ValueError: unknown mode, missing ``dataset`` statistics, or an unreadable file.
    """
    from unetkit.data.geotiff import raster_shape
    from unetkit.data.io import read_image
    from unetkit.data.normalize import NORMALIZATIONS, dataset_stats

    if mode not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {mode!r}; choose one of {', '.join(NORMALIZATIONS)}")
    channels, height, width = raster_shape(path)
    if mode == "none":
        return ChannelStats(shift=np.zeros(channels), scale=np.ones(channels))
    if mode == "dataset":
        shift, scale = dataset_stats(mean, std, channels=channels, eps=_EPS)
        return ChannelStats(shift=shift.astype(np.float64), scale=scale.astype(np.float64))
    count, run_mean, m2 = 0, np.zeros(channels), np.zeros(channels)
    lo, hi = np.full(channels, np.inf), np.full(channels, -np.inf)
    for window in iter_windows(height, width, block):
        x = read_image(path, window=window).array.reshape(channels, -1)
        if mode == "minmax":
            lo, hi = np.minimum(lo, x.min(axis=1)), np.maximum(hi, x.max(axis=1))
            continue
        x = x.astype(np.float64)
        n = x.shape[1]
        block_mean = x.mean(axis=1)
        block_m2 = ((x - block_mean[:, None]) ** 2).sum(axis=1)
        delta, total = block_mean - run_mean, count + n
        run_mean = run_mean + delta * (n / total)
        m2 = m2 + block_m2 + delta**2 * (count * n / total)
        count = total
    if mode == "minmax":
        lo, hi = lo.astype(np.float64), hi.astype(np.float64)
        return ChannelStats(shift=lo, scale=np.maximum(hi - lo, _EPS))
    return ChannelStats(shift=run_mean, scale=np.maximum(np.sqrt(m2 / count), _EPS))


def is_large_raster(path: str | Path, *, threshold_pixels: int = DEFAULT_WINDOWED_PIXELS) -> bool:
    """True for a single-page 2D (Geo)TIFF with more than ``threshold_pixels`` pixels (header only)."""
    from unetkit.data.io import image_shape

    if full_suffix(path) not in TIFF_SUFFIXES:
        return False
    shape = image_shape(path)
    return len(shape) == 3 and shape[1] * shape[2] > threshold_pixels


@dataclass(frozen=True)
class RasterResult:
    """What :func:`predict_raster` wrote and did.

    Attributes:
        written: output paths (mask first).
        stats: the global normalisation used.
        windows: :class:`unetkit.runtime.tiling.WindowStats` of the prediction pass.
    """

    written: list[Path]
    stats: ChannelStats
    windows: Any


@dataclass(frozen=True)
class RasterPlan:
    """Everything about the windowed prediction of one raster but the network: computed once per raster.

    Small and picklable, so that another process can predict some of its chunks (:func:`predict_raster_chunks`).

    Attributes:
        path: the input raster.
        size: ``(height, width)``.
        stats: the global normalisation.
        geometry: the source's ``crs`` and ``transform``.
        classes: the model's classes.
        threshold: the one-channel threshold (labels from probabilities).
        settings: the tiles, overlap, blend and batch of an in-memory prediction of the same raster.
        chunk_tiles: grid steps per chunk side.
        chunks: how many chunks the raster is cut into.
    """

    path: Path
    size: tuple[int, int]
    stats: ChannelStats
    geometry: dict[str, Any]
    classes: int
    threshold: float
    settings: Any
    chunk_tiles: int
    chunks: int


def plan_raster(predictor: Any, path: str | Path, *, window: int = 2048, stats_block: int = 1024) -> RasterPlan:
    """Check ``path`` against ``predictor``, stream its statistics and fix the tiling (see :func:`predict_raster`).

    Raises:
        ValueError: as :func:`predict_raster`.
    """
    from unetkit.data.geotiff import raster_shape, read_geotiff
    from unetkit.runtime.tiling import TileSettings, pass_tiles, raster_chunk_count

    path = Path(path)
    if predictor.spatial_dims != 2:
        raise ValueError(f"{path}: windowed prediction needs a 2D model; this plan is {predictor.spatial_dims}D")
    channels, height, width = raster_shape(path)
    expected = input_channels(predictor.plan, fallback=channels)
    if channels != expected:
        raise ValueError(f"{path}: the model takes {expected} channel(s); the raster has {channels}")
    data = predictor.plan.data
    stats = raster_stats(path, mode=data.normalization, block=stats_block, mean=data.intensity_mean,
                         std=data.intensity_std)
    _, source = read_geotiff(path, window=(0, 0, 1, 1))  # geometry only; the (0, 0) window has the full transform
    # The tiles of an in-memory prediction of the same raster (infer.max_pass_pixels), so both give the same pixels.
    infer = predictor.infer
    tile, batch = pass_tiles((height, width), infer.tile_size, max_pass_pixels=infer.max_pass_pixels,
                             batch_size=infer.batch_size)
    step = max(1, int(min(tile) * (1.0 - infer.overlap)))
    settings = TileSettings(tile_size=tile, overlap=infer.overlap, blend=infer.blend, batch_size=batch)
    chunk_tiles = max(1, (window - max(tile)) // step)
    return RasterPlan(path=path, size=(height, width), stats=stats,
                      geometry={"crs": source["crs"], "transform": source["transform"]},
                      classes=output_classes(predictor.plan), threshold=infer.threshold,
                      settings=settings,
                      chunk_tiles=chunk_tiles,
                      chunks=raster_chunk_count(size=(height, width), settings=settings, chunk_tiles=chunk_tiles))


def predict_raster(
    predictor: Any,
    path: str | Path,
    *,
    mask_path: str | Path,
    prob_path: str | Path | None = None,
    uncertainty_path: str | Path | None = None,
    window: int = 2048,
    stats_block: int = 1024,
) -> RasterResult:
    """Predict a huge single-page 2D (Geo)TIFF window by window (see the module docstring).

    Args:
        predictor: a 2D :class:`unetkit.infer.predictor.Predictor` (its plan's normalisation, tiles as
            :func:`unetkit.runtime.tiling.pass_tiles` chooses them for the whole raster, overlap, blend, batch size,
            TTA and threshold are used).
        path: the input raster.
        mask_path: label raster to write (uint8, or uint16 for more than 256 classes), with the input's CRS
            and transform.
        prob_path: optional float32 K-band probability raster.
        uncertainty_path: optional float32 one-band uncertainty raster (needs TTA).
        window: target side of the windows predicted at once (memory grows with its square).
        stats_block: window side of the statistics pass.

    Returns:
        :class:`RasterResult`.

    Raises:
        ValueError: a 3D predictor, a channel count the model does not take, uncertainty without TTA, or an
            unreadable raster.
    """
    from unetkit.runtime.tiling import predict_raster_windows

    if uncertainty_path is not None and not predictor.with_uncertainty:
        raise ValueError("an uncertainty raster needs test-time augmentation (tta other than 'none')")
    plan = plan_raster(predictor, path, window=window, stats_block=stats_block)
    targets = RasterTargets(mask=mask_path, prob=prob_path, uncertainty=uncertainty_path)
    with raster_writers(plan, targets, tta=predictor.with_uncertainty) as write:
        windows = predict_raster_windows(predictor.tile_fn(), _reader(plan), lambda rows, cols, out: write(
            (rows.start, cols.start, rows.stop - rows.start, cols.stop - cols.start), out,
        ), size=plan.size, settings=plan.settings, chunk_tiles=plan.chunk_tiles)  # fmt: skip
    return RasterResult(written=targets.paths(), stats=plan.stats, windows=windows)


def predict_raster_chunks(predictor: Any, plan: RasterPlan, chunks: range) -> list[tuple[Window, np.ndarray]]:
    """The blended outputs ``(K[+1], h, w)`` of some chunks of ``plan``'s raster, each with its core window.

    Handing every chunk's outputs, in chunk order, to the ``write`` of :func:`raster_writers` writes the
    rasters :func:`predict_raster` writes; ranges of chunks can be predicted by different processes.
    """
    from unetkit.runtime.tiling import predict_raster_windows

    cores: list[tuple[Window, np.ndarray]] = []
    predict_raster_windows(predictor.tile_fn(), _reader(plan), lambda rows, cols, out: cores.append(
        ((rows.start, cols.start, rows.stop - rows.start, cols.stop - cols.start), out),
    ), size=plan.size, settings=plan.settings, chunk_tiles=plan.chunk_tiles, chunks=chunks)  # fmt: skip
    return cores


@dataclass(frozen=True)
class RasterTargets:
    """The rasters a windowed prediction writes: labels, and optionally probabilities and uncertainty."""

    mask: str | Path
    prob: str | Path | None = None
    uncertainty: str | Path | None = None

    def paths(self) -> list[Path]:
        """The paths written, mask first."""
        return [Path(p) for p in (self.mask, self.prob, self.uncertainty) if p is not None]


@contextlib.contextmanager
def raster_writers(plan: RasterPlan, targets: RasterTargets, *, tta: bool) -> Iterator[Any]:
    """``write(box, out)`` for the outputs ``(K[+1], h, w)`` of core windows; every raster is renamed into place
    when the block ends without an error, and none is left behind otherwise."""
    height, width = plan.size
    with contextlib.ExitStack() as stack:
        writers = _open_writers(stack, height=height, width=width, classes=plan.classes, geometry=plan.geometry,
                                mask_path=targets.mask, prob_path=targets.prob, uncertainty_path=targets.uncertainty)
        yield lambda box, out: _write_outputs(writers, out, box, classes=plan.classes, threshold=plan.threshold,
                                              tta=tta)


def _reader(plan: RasterPlan) -> Any:
    def read_window(rows: slice, cols: slice) -> np.ndarray:
        box = (rows.start, cols.start, rows.stop - rows.start, cols.stop - cols.start)
        return plan.stats.apply(_read_window(plan.path, box))

    return read_window


def _read_window(path: Path, box: Window) -> np.ndarray:
    from unetkit.data.io import read_image

    return read_image(path, window=box).array


def _open_writers(
    stack: contextlib.ExitStack,
    *,
    height: int,
    width: int,
    classes: int,
    geometry: dict[str, Any],
    mask_path: str | Path,
    prob_path: str | Path | None,
    uncertainty_path: str | Path | None,
) -> dict[str, Any]:
    """GeoTiffWriters entered on ``stack``: all are renamed into place on success, all discarded on error."""
    from unetkit.data.geotiff import GeoTiffWriter

    label_dtype = "uint8" if max(classes, 2) <= 256 else "uint16"
    writers = {"mask": stack.enter_context(
        GeoTiffWriter(mask_path, height=height, width=width, count=1, dtype=label_dtype, meta=geometry))}
    if prob_path is not None:
        writers["prob"] = stack.enter_context(
            GeoTiffWriter(prob_path, height=height, width=width, count=classes, dtype="float32", meta=geometry))
    if uncertainty_path is not None:
        writers["uncertainty"] = stack.enter_context(
            GeoTiffWriter(uncertainty_path, height=height, width=width, count=1, dtype="float32", meta=geometry))
    return writers


def _write_outputs(
    writers: dict[str, Any], out: np.ndarray, box: Window, *, classes: int, threshold: float, tta: bool
) -> None:
    """Labels (and probabilities / uncertainty) of one core window ``out`` ``(K[+1], h, w)``."""
    from unetkit.runtime.postprocess import probabilities_to_labels

    probs = out[:-1] if tta else out
    if probs.shape[0] != classes:
        raise ValueError(f"the model returned {probs.shape[0]} channels but the plan says classes={classes}")
    labels = probabilities_to_labels(probs, threshold=threshold)
    mask = writers["mask"]
    writers["mask"].write(labels.astype(mask.dtype)[None], box)
    if "prob" in writers:
        writers["prob"].write(np.ascontiguousarray(probs, dtype=np.float32), box)
    if "uncertainty" in writers:
        writers["uncertainty"].write(np.ascontiguousarray(out[-1:], dtype=np.float32), box)
