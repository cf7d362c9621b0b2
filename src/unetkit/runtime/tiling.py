"""Sliding-window (tiled) prediction for images larger than what a model can take at once, in 2D and 3D.

How a tiled prediction is formed:

* **Grid.** Along each axis of size ``n`` tiles of size ``t`` start at ``0, step, 2*step, ...`` with
  ``step = max(1, floor(t * (1 - overlap)))``, and one last tile is placed flush with the border
  (start ``n - t``), so every pixel is covered and no tile reaches outside the image.
* **Small images.** An axis shorter than its tile (``n < t``) is padded *at its end* up to ``t``
  (``pad_mode``: zeros by default, or replicate/reflect), predicted as one tile, and the padding is cropped
  from the result. The padded zone acts like image content beyond the border, so a model that pads its own
  borders with zeros sees something slightly different there than it would on the unpadded image.
* **Blending.** Every pixel's output is ``sum_i w_i * pred_i / sum_i w_i`` over the tiles ``i`` covering it,
  accumulated in float32, with ``w`` a Gaussian importance map (centre trusted more than the edges, which
  hides seams) or constant weights.
* **Context (exactness).** A convolution near a tile edge sees the tile's zero padding instead of the
  neighbouring pixels, so raw tiles disagree with a whole-image prediction near their edges. With
  ``context=r`` the ``r`` outermost pixels of each tile edge that lies *inside* the image get weight 0
  (tile edges on the image border are kept: there the tile's padding is the image's padding). For a model
  whose receptive-field radius is at most ``r`` every kept tile pixel then equals the whole-image
  prediction, and so does the blend, whatever the weights (up to float rounding). This needs tiles to
  overlap by at least ``2*r`` pixels; a clear error says so otherwise.

:func:`predict_raster_windows` applies the same grid to a huge 2D raster chunk by chunk, so memory stays
bounded by the chunk size rather than the image size, and gives the same numbers as
:func:`sliding_window_predict` on the whole raster (see its docstring for why).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

BLENDS = ("gaussian", "constant")
PAD_MODES = ("constant", "replicate", "reflect")

TileFn = Callable[[torch.Tensor], torch.Tensor]
Tile = tuple[slice, ...]


def _as_tuple(value: int | Sequence[int], ndim: int, name: str) -> tuple[int, ...]:
    """Broadcast an int to ``ndim`` values, or check a sequence has ``ndim`` positive-or-zero ints."""
    values = (int(value),) * ndim if isinstance(value, (int, np.integer)) else tuple(int(v) for v in value)
    if len(values) != ndim:
        raise ValueError(f"{name} has {len(values)} values but the image has {ndim} spatial dimensions")
    if any(v < 0 for v in values):
        raise ValueError(f"{name} must not be negative, got {values}")
    return values


def _check_tile(tile_size: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    tile = _as_tuple(tile_size, ndim, "tile_size")
    if any(t < 1 for t in tile):
        raise ValueError(f"tile_size must be positive, got {tile}")
    return tile


def _check_overlap(overlap: float) -> float:
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1) (a fraction of the tile), got {overlap}")
    return float(overlap)


def axis_starts(size: int, tile: int, *, overlap: float) -> list[int]:
    """Tile start positions along one axis (in padded coordinates; see the module docstring).

    Args:
        size: axis length (>= 1).
        tile: tile length along this axis.
        overlap: fraction of the tile shared by neighbouring tiles, in [0, 1).

    Returns:
        Sorted, distinct starts; the last is ``max(size, tile) - tile``.
    """
    if size < 1:
        raise ValueError(f"image axes must be non-empty, got length {size}")
    step = max(1, math.floor(tile * (1.0 - _check_overlap(overlap))))
    last = max(size, tile) - tile
    return list(range(0, last, step)) + [last]


def padded_shape(image_shape: Sequence[int], tile_size: int | Sequence[int]) -> tuple[int, ...]:
    """Spatial shape after padding axes shorter than the tile (at their end) up to the tile size."""
    tile = _check_tile(tile_size, len(image_shape))
    return tuple(max(int(n), t) for n, t in zip(image_shape, tile, strict=True))


def tile_grid(image_shape: Sequence[int], tile_size: int | Sequence[int], *, overlap: float) -> list[Tile]:
    """Tiles covering an image, row-major (last axis fastest).

    Args:
        image_shape: spatial shape ``(H, W)`` or ``(D, H, W)``.
        tile_size: tile shape (an int means the same size along every axis).
        overlap: fraction of the tile shared by neighbouring tiles, in [0, 1).

    Returns:
        One tuple of slices per tile, in the coordinates of :func:`padded_shape` (equal to the image
        coordinates unless the image is smaller than a tile along some axis).
    """
    tile = _check_tile(tile_size, len(image_shape))
    per_axis = [axis_starts(int(n), t, overlap=overlap) for n, t in zip(image_shape, tile, strict=True)]
    return [
        tuple(slice(s, s + t) for s, t in zip(starts, tile, strict=True))
        for starts in itertools.product(*per_axis)
    ]


def gaussian_weights(
    tile_size: Sequence[int], *, sigma_scale: float = 1.0 / 8.0, min_weight: float = 1e-3
) -> torch.Tensor:
    """Gaussian importance map: 1 at the tile centre, falling towards the edges, never below ``min_weight``.

    Args:
        tile_size: tile shape.
        sigma_scale: standard deviation as a fraction of the tile size along each axis.
        min_weight: floor on the weights (> 0), so every covered pixel gets a non-zero total weight.

    Returns:
        float32 tensor of shape ``tile_size`` with values in ``[min_weight, 1]``.
    """
    if not min_weight > 0:
        raise ValueError(f"min_weight must be > 0 so that every pixel keeps some weight, got {min_weight}")
    if not sigma_scale > 0:
        raise ValueError(f"sigma_scale must be > 0, got {sigma_scale}")
    # Computed once per setting (4.5 ms for a 512 x 512 tile, as long as a fifth of the int8 network); each
    # caller gets its own copy.
    return _gaussian_weights(tuple(int(t) for t in tile_size), float(sigma_scale), float(min_weight)).clone()


@functools.lru_cache(maxsize=16)
def _gaussian_weights(tile_size: tuple[int, ...], sigma_scale: float, min_weight: float) -> torch.Tensor:
    weights = torch.ones((), dtype=torch.float64)
    for t in tile_size:
        x = torch.arange(int(t), dtype=torch.float64) - (int(t) - 1) / 2.0
        profile = torch.exp(-(x**2) / (2.0 * (sigma_scale * int(t)) ** 2))
        weights = weights[..., None] * profile
    weights = weights / weights.max()
    return weights.clamp_min(min_weight).to(torch.float32)


def constant_weights(tile_size: Sequence[int]) -> torch.Tensor:
    """All-ones weights of shape ``tile_size`` (plain averaging of overlapping tiles)."""
    return torch.ones(tuple(int(t) for t in tile_size), dtype=torch.float32)


def blend_weights(
    tile_size: Sequence[int],
    *,
    blend: str = "gaussian",
    sigma_scale: float = 1.0 / 8.0,
    min_weight: float = 1e-3,
) -> torch.Tensor:
    """Weights for ``blend`` (``gaussian`` or ``constant``); see :func:`gaussian_weights`."""
    if blend == "gaussian":
        return gaussian_weights(tile_size, sigma_scale=sigma_scale, min_weight=min_weight)
    if blend == "constant":
        return constant_weights(tile_size)
    raise ValueError(f"unknown blend {blend!r}; choose one of {', '.join(BLENDS)}")


def _check_context(
    starts_per_axis: Sequence[Sequence[int]], tile: Sequence[int], context: Sequence[int]
) -> None:
    """Raise if, with ``context`` discarded at interior tile edges, some pixel would get no valid tile."""
    for axis, (starts, t, c) in enumerate(zip(starts_per_axis, tile, context, strict=True)):
        gaps = [b - a for a, b in zip(starts[:-1], starts[1:], strict=True)]
        if gaps and max(gaps) > t - 2 * c:
            need = 2 * c / t
            raise ValueError(
                f"context={c} along axis {axis} discards {c} pixels at each inner tile edge, so tiles must overlap "
                f"by at least {2 * c} of their {t} pixels: use overlap >= {need:.3f}, a larger tile or less context"
            )


def _tile_weight(
    base: torch.Tensor, tile: Tile, padded: Sequence[int], context: Sequence[int]
) -> torch.Tensor:
    """``base`` with the ``context`` outermost pixels zeroed on tile edges that lie inside the image."""
    if not any(context):
        return base
    weight = base.clone()
    for axis, (sl, n, c) in enumerate(zip(tile, padded, context, strict=True)):
        if c == 0:
            continue
        index = [slice(None)] * weight.ndim
        if sl.start > 0:
            index[axis] = slice(0, c)
            weight[tuple(index)] = 0
        if sl.stop < n:
            index[axis] = slice(weight.shape[axis] - c, None)
            weight[tuple(index)] = 0
    return weight


def _pad_end(image: torch.Tensor, target: Sequence[int], mode: str) -> torch.Tensor:
    """Pad the spatial axes of ``image`` (C, *spatial) at their end up to ``target``."""
    if mode not in PAD_MODES:
        raise ValueError(f"unknown pad_mode {mode!r}; choose one of {', '.join(PAD_MODES)}")
    extra = [t - n for n, t in zip(image.shape[1:], target, strict=True)]
    if not any(extra):
        return image
    if mode == "reflect" and any(e >= n for e, n in zip(extra, image.shape[1:], strict=True) if e):
        raise ValueError(
            f"pad_mode='reflect' cannot pad an axis of length n by n or more (image {tuple(image.shape[1:])}, "
            f"tile {tuple(target)}); use pad_mode='replicate' or 'constant'"
        )
    pads: list[int] = []
    for e in reversed(extra):  # F.pad lists the last axis first
        pads += [0, e]
    if mode == "constant":
        return F.pad(image, pads)
    # replicate/reflect need a batch axis and a floating tensor
    return F.pad(image[None].float() if not image.is_floating_point() else image[None], pads, mode=mode)[0]


# infer.max_pass_pixels = None: one pass for 2D images of up to 1024 x 1024 (a 512 x 512 ISBI slice in one pass
# instead of 9 overlapping 256 tiles: 2.4x faster for the same test Dice, benchmarks/bench_precision.py).
AUTO_MAX_PASS_PIXELS_2D = 1024 * 1024


def pass_tiles(
    image_shape: Sequence[int], tile_size: Sequence[int], *, max_pass_pixels: int | None, batch_size: int
) -> tuple[tuple[int, ...], int]:
    """The tile shape and tiles per batch that predict an image of ``image_shape`` in the fewest passes.

    An image of at most ``max_pass_pixels`` pixels (voxels) is one tile of its own shape; a larger one is cut into
    tiles of up to ``max_pass_pixels`` (``floor(max_pass_pixels ** (1 / ndim))`` per axis, never below
    ``tile_size``, never above the image), with ``batch_size`` scaled down so that a batch holds about as many
    pixels as ``batch_size`` tiles of ``tile_size``. ``max_pass_pixels`` None means
    :data:`AUTO_MAX_PASS_PIXELS_2D` for 2D and ``tile_size`` for 3D; 0 keeps ``tile_size`` and ``batch_size``.

    Example:
        >>> pass_tiles((512, 512), (256, 256), max_pass_pixels=None, batch_size=4)
        ((512, 512), 1)
        >>> pass_tiles((3000, 500), (256, 256), max_pass_pixels=None, batch_size=4)
        ((1024, 500), 1)
    """
    tile = tuple(int(t) for t in tile_size)
    ndim = len(tile)
    if max_pass_pixels is None:
        max_pass_pixels = AUTO_MAX_PASS_PIXELS_2D if ndim == 2 else math.prod(tile)
    if max_pass_pixels <= math.prod(tile):
        return tile, batch_size
    shape = tuple(int(n) for n in image_shape)
    if math.prod(shape) <= max_pass_pixels:
        chosen = shape
    else:
        side = int(math.floor(max_pass_pixels ** (1 / ndim) + 1e-9))
        chosen = tuple(min(n, max(t, side)) for n, t in zip(shape, tile, strict=True))
    batch = max(1, (batch_size * math.prod(tile)) // math.prod(chosen))
    return chosen, min(batch, batch_size)


def fits_one_tile(image_shape: Sequence[int], tile_size: int | Sequence[int]) -> bool:
    """Whether an image of spatial shape ``image_shape`` is predicted as a single (padded) tile."""
    tile = _check_tile(tile_size, len(image_shape))
    return all(int(n) <= t for n, t in zip(image_shape, tile, strict=True))


def pad_to_tile(image: torch.Tensor, tile_size: int | Sequence[int], *, pad_mode: str = "constant") -> torch.Tensor:
    """The one tile :func:`sliding_window_predict` gives ``fn`` for an image ``(C, *spatial)`` no larger than a
    tile: the image padded at its end up to the tile size. Several such tiles can share one batch.

    Raises:
        ValueError: an image larger than a tile along some axis.
    """
    spatial = tuple(image.shape[1:])
    if not fits_one_tile(spatial, tile_size):
        raise ValueError(f"image {spatial} is larger than one tile {tuple(_check_tile(tile_size, len(spatial)))}")
    return _pad_end(image, padded_shape(spatial, tile_size), pad_mode)


@dataclass(frozen=True)
class TileSettings:
    """How a tiled prediction runs (everything but the function and the image).

    Attributes:
        tile_size: tile shape (int: same along every axis).
        overlap: fraction of a tile shared with its neighbour, in [0, 1).
        blend: ``gaussian`` or ``constant`` weights.
        batch_size: tiles per call of ``fn``.
        out_channels: ``K`` if known (checked); inferred from the first batch otherwise.
        device: where tiles are sent for ``fn`` (default: the image's device). Accumulation stays on the
            image's device, so a CPU image with a GPU model only keeps tiles on the GPU.
        dtype: dtype of the tiles given to ``fn`` (default: the image dtype if floating, else float32).
        context: pixels discarded at inner tile edges; use >= the model's receptive-field radius for a
            result equal to a whole-image prediction.
        pad_mode: how axes shorter than the tile are padded: ``constant`` (zeros), ``replicate``, ``reflect``.
        sigma_scale, min_weight: Gaussian importance-map settings (see :func:`gaussian_weights`).
    """

    tile_size: int | Sequence[int]
    overlap: float = 0.5
    blend: str = "gaussian"
    batch_size: int = 4
    out_channels: int | None = None
    device: torch.device | str | None = None
    dtype: torch.dtype | None = None
    context: int | Sequence[int] = 0
    pad_mode: str = "constant"
    sigma_scale: float = 1.0 / 8.0
    min_weight: float = 1e-3


@dataclass(frozen=True)
class _Settings:
    """Everything about a tiled prediction except the image (shared by the whole-image and windowed paths)."""

    tile: tuple[int, ...]
    padded: tuple[int, ...]
    context: tuple[int, ...]
    weights: torch.Tensor
    batch_size: int
    out_channels: int | None
    device: torch.device
    dtype: torch.dtype


def _run_batch(fn: TileFn, batch: list[torch.Tensor], settings: _Settings) -> torch.Tensor:
    x = torch.stack(batch).to(device=settings.device, dtype=settings.dtype)
    y = fn(x)
    expected = (x.shape[0], *settings.tile)
    if not isinstance(y, torch.Tensor) or y.ndim != x.ndim or (y.shape[0], *y.shape[2:]) != expected:
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(
            f"fn must map (B, C, *tile) to (B, K, *tile) = ({expected[0]}, K, {settings.tile}); got {got}"
        )
    if settings.out_channels is not None and y.shape[1] != settings.out_channels:
        raise ValueError(f"fn returned {y.shape[1]} channels but out_channels={settings.out_channels}")
    return y


def _accumulate(
    fn: TileFn, window: torch.Tensor, tiles: Sequence[Tile], offset: Sequence[int], settings: _Settings
) -> tuple[torch.Tensor, torch.Tensor]:
    """Blend ``tiles`` (padded-image coordinates) of ``window`` (C, *win), whose origin is at ``offset``.

    Returns:
        ``(sum of w * pred, sum of w)`` over the window, float32, on the window's device.
    """
    spatial = tuple(window.shape[1:])
    num: torch.Tensor | None = None
    den = torch.zeros(spatial, dtype=torch.float32, device=window.device)
    local = [tuple(slice(s.start - o, s.stop - o) for s, o in zip(t, offset, strict=True)) for t in tiles]
    for first in range(0, len(tiles), settings.batch_size):
        chunk = range(first, min(first + settings.batch_size, len(tiles)))
        y = _run_batch(fn, [window[(slice(None),) + local[i]] for i in chunk], settings)
        y = y.to(device=window.device, dtype=torch.float32)
        if num is None:
            num = torch.zeros((y.shape[1], *spatial), dtype=torch.float32, device=window.device)
        for row, i in enumerate(chunk):
            w = _tile_weight(settings.weights, tiles[i], settings.padded, settings.context).to(window.device)
            num[(slice(None),) + local[i]] += y[row] * w
            den[local[i]] += w
    assert num is not None  # there is always at least one tile
    return num, den


def _settings(
    spatial_shape: Sequence[int], options: TileSettings, *, image_device: torch.device, image_dtype: torch.dtype
) -> _Settings:
    ndim = len(spatial_shape)
    if ndim not in (2, 3):
        raise ValueError(f"tiled prediction supports 2D or 3D images, got {ndim} spatial dimensions")
    if options.batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {options.batch_size}")
    tile = _check_tile(options.tile_size, ndim)
    ctx = _as_tuple(options.context, ndim, "context")
    starts = [axis_starts(int(n), t, overlap=options.overlap) for n, t in zip(spatial_shape, tile, strict=True)]
    _check_context(starts, tile, ctx)
    weights = blend_weights(tile, blend=options.blend, sigma_scale=options.sigma_scale, min_weight=options.min_weight)
    return _Settings(
        tile=tile,
        padded=padded_shape(spatial_shape, tile),
        context=ctx,
        weights=weights,
        batch_size=int(options.batch_size),
        out_channels=options.out_channels,
        device=torch.device(options.device) if options.device is not None else image_device,
        dtype=options.dtype or (image_dtype if image_dtype.is_floating_point else torch.float32),
    )


def sliding_window_predict(fn: TileFn, image: torch.Tensor | np.ndarray, settings: TileSettings) -> torch.Tensor:
    """Predict a whole image tile by tile and blend the tiles (see the module docstring).

    Args:
        fn: maps a batch ``(B, C, *tile)`` to ``(B, K, *tile)`` (probabilities or logits); called without
            gradients. Put a module in eval mode first.
        image: ``(C, *spatial)`` with 2 or 3 spatial dimensions.
        settings: tile shape, overlap, blending, batching, devices (see :class:`TileSettings`).

    Returns:
        float32 tensor ``(K, *spatial)`` on the image's device.

    Raises:
        ValueError: bad shapes/settings, or ``fn`` returning the wrong shape.
    """
    image = torch.as_tensor(image)
    if image.ndim not in (3, 4):
        raise ValueError(f"image must be (C, H, W) or (C, D, H, W), got shape {tuple(image.shape)}")
    spatial = tuple(image.shape[1:])
    resolved = _settings(spatial, settings, image_device=image.device, image_dtype=image.dtype)
    padded = _pad_end(image, resolved.padded, settings.pad_mode)
    tiles = tile_grid(spatial, resolved.tile, overlap=settings.overlap)
    crop = (slice(None), *(slice(0, n) for n in spatial))
    with torch.no_grad():
        if len(tiles) == 1:  # one tile covers the image: blending would compute w * y / w = y
            y = _run_batch(fn, [padded[(slice(None),) + tiles[0]]], resolved)[0]
            return y.to(device=padded.device, dtype=torch.float32)[crop]
        num, den = _accumulate(fn, padded, tiles, (0,) * len(spatial), resolved)
    return (num / den)[crop]


ReadWindow = Callable[[slice, slice], "np.ndarray | torch.Tensor"]
WriteWindow = Callable[[slice, slice, np.ndarray], None]


@dataclass(frozen=True)
class WindowStats:
    """What :func:`predict_raster_windows` did.

    Attributes:
        chunks: number of chunks (each read once and written once).
        tiles_in_grid: tiles in the global grid.
        tiles_predicted: tiles passed through ``fn``; more than ``tiles_in_grid`` because tiles straddling a
            chunk border are predicted once per chunk they touch (the price of bounded memory).
        max_window: largest window read, ``(rows, cols)``; memory is proportional to it.
    """

    chunks: int
    tiles_in_grid: int
    tiles_predicted: int
    max_window: tuple[int, int]


def _chunk_plan(
    starts: Sequence[int], tile: int, size: int, chunk_tiles: int
) -> list[tuple[int, int, list[int]]]:
    """Per chunk along one axis: ``(core_start, core_stop, starts of the tiles touching the core)``."""
    bounds = [starts[i] for i in range(0, len(starts), chunk_tiles)] + [size]
    plan = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        plan.append((a, b, [s for s in starts if s < b and s + tile > a]))
    return plan


def _read(
    read_window: ReadWindow, rows: slice, cols: slice, bounds: tuple[int, int], pad_mode: str
) -> torch.Tensor:
    """Read ``rows, cols`` (in padded coordinates) clipped to the raster, padded at the end like the whole image."""
    height, width = bounds
    clipped = (slice(rows.start, min(rows.stop, height)), slice(cols.start, min(cols.stop, width)))
    window = torch.as_tensor(read_window(*clipped))
    want = (clipped[0].stop - clipped[0].start, clipped[1].stop - clipped[1].start)
    if window.ndim != 3 or tuple(window.shape[1:]) != want:
        raise ValueError(
            f"read_window{clipped} must return (C, {want[0]}, {want[1]}), got {tuple(window.shape)}"
        )
    return _pad_end(window, (rows.stop - rows.start, cols.stop - cols.start), pad_mode)


def predict_raster_windows(
    fn: TileFn,
    read_window: ReadWindow,
    write_window: WriteWindow,
    *,
    size: tuple[int, int],
    settings: TileSettings,
    chunk_tiles: int = 8,
    chunks: range | None = None,
) -> WindowStats:
    """Tiled prediction of a huge 2D raster, chunk by chunk, with memory independent of the raster size.

    The raster is cut into chunks of about ``chunk_tiles x chunk_tiles`` grid steps. For each chunk this reads
    one window: the chunk's *core* plus a halo wide enough to hold every tile of the **global** tile grid
    (:func:`tile_grid` of the whole raster) that touches the core. Those tiles are predicted and blended in
    the window, and only the core is written. Because a core pixel is blended from exactly the same tiles,
    with the same inputs, weights and summation order as in :func:`sliding_window_predict` of the whole
    raster, the written values equal the whole-raster result for *any* ``fn`` (bit for bit when ``fn`` gives
    the same output for a tile whatever else is in its batch, e.g. ``batch_size=1``). Cores tile the raster
    exactly, so every pixel is written once. Windows are at most ``chunk_tiles * step + 2 * tile`` per axis.

    Args:
        fn: as in :func:`sliding_window_predict`.
        read_window: ``read_window(rows, cols)`` returns the raster's ``(C, h, w)`` pixels for two slices that
            always lie inside the raster (e.g. a rasterio ``Window.from_slices`` read, already normalised).
        write_window: ``write_window(rows, cols, probs)`` receives float32 ``(K, h, w)`` numpy outputs for
            disjoint core windows that together cover the raster.
        size: raster size ``(height, width)``.
        settings: as in :func:`sliding_window_predict`.
        chunk_tiles: grid steps per chunk side; larger chunks use more memory but re-predict fewer tiles
            (tiles crossing a chunk border are predicted for each chunk they touch).
        chunks: only these chunks (indices in row-major order, out of :func:`raster_chunk_count`); None: all.
            Each chunk's output does not depend on which others are predicted, so disjoint ranges can be
            predicted by different processes and their cores written into one raster.

    Returns:
        :class:`WindowStats` (of the chunks predicted).
    """
    if chunk_tiles < 1:
        raise ValueError(f"chunk_tiles must be >= 1, got {chunk_tiles}")
    resolved = _settings(size, settings, image_device=torch.device("cpu"), image_dtype=torch.float32)
    th, tw = resolved.tile
    starts = [axis_starts(n, t, overlap=settings.overlap) for n, t in zip(size, resolved.tile, strict=True)]
    plans = [_chunk_plan(s, t, n, chunk_tiles) for s, t, n in zip(starts, resolved.tile, size, strict=True)]
    predicted, largest = 0, (0, 0)
    every = list(itertools.product(*plans))
    for (r0, r1, row_starts), (c0, c1, col_starts) in (every if chunks is None else [every[i] for i in chunks]):
        rows = slice(row_starts[0], row_starts[-1] + th)
        cols = slice(col_starts[0], col_starts[-1] + tw)
        window = _read(read_window, rows, cols, size, settings.pad_mode)
        resolved = _settings_with_dtype(resolved, window.dtype, settings.dtype)
        tiles = [(slice(r, r + th), slice(c, c + tw)) for r, c in itertools.product(row_starts, col_starts)]
        with torch.no_grad():
            num, den = _accumulate(fn, window, tiles, (rows.start, cols.start), resolved)
        core = (slice(None), slice(r0 - rows.start, r1 - rows.start), slice(c0 - cols.start, c1 - cols.start))
        write_window(slice(r0, r1), slice(c0, c1), (num[core] / den[core[1:]]).cpu().numpy())
        predicted += len(tiles)
        largest = (max(largest[0], rows.stop - rows.start), max(largest[1], cols.stop - cols.start))
    return WindowStats(
        chunks=len(every) if chunks is None else len(chunks),
        tiles_in_grid=len(starts[0]) * len(starts[1]),
        tiles_predicted=predicted,
        max_window=largest,
    )


def raster_chunk_count(*, size: tuple[int, int], settings: TileSettings, chunk_tiles: int = 8) -> int:
    """How many chunks :func:`predict_raster_windows` cuts a raster of ``size`` into (same arguments)."""
    tile = _check_tile(settings.tile_size, 2)
    counts = [len(_chunk_plan(axis_starts(n, t, overlap=settings.overlap), t, n, chunk_tiles))
              for n, t in zip(size, tile, strict=True)]
    return counts[0] * counts[1]


def _settings_with_dtype(
    settings: _Settings, window_dtype: torch.dtype, requested: torch.dtype | None
) -> _Settings:
    """The tile dtype follows the data read (float64 raster -> float64 tiles) unless one was requested."""
    if requested is not None:
        return settings
    tile_dtype = window_dtype if window_dtype.is_floating_point else torch.float32
    if tile_dtype == settings.dtype:
        return settings
    return _Settings(**{**settings.__dict__, "dtype": tile_dtype})
