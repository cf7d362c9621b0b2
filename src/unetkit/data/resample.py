"""Resampling volumes between voxel spacings (pure functions over numpy arrays, ``scipy.ndimage``).

A plan with ``data.target_spacing`` trains on every volume resampled to that spacing and predicts each input
at that spacing, then brings the probabilities back to the input's own grid (so the written mask has the
input's shape and affine). A volume already at the target spacing is passed through untouched (no cost, no
interpolation error).

Interpolation, following nnU-Net's experience:

* images: cubic spline (order 3) in every axis; for anisotropic data (largest / smallest spacing > 3) the
  coarse axis separately with linear interpolation (order 1): a cubic spline across slices 3-5 mm apart
  rings at tissue edges, and nnU-Net's nearest-neighbour choice there leaves steps where slices are added;
* labels: nearest neighbour (order 0), which keeps class indices and ``ignore_index`` exact;
* probabilities: linear (order 1): a convex combination of neighbours, so the classes still sum to 1.

Grids are edge-aligned (``grid_mode=True``): a volume of ``n`` voxels of size ``s`` spans ``n * s`` and keeps
that extent, which is what resampling to a spacing means physically (scipy's default instead aligns the
centres of the corner voxels).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

ANISOTROPY_RATIO = 3.0

__all__ = [
    "ANISOTROPY_RATIO",
    "coarse_axis",
    "needs_resampling",
    "resample_image",
    "resample_labels",
    "resample_probabilities",
    "resampled_shape",
    "to_target_spacing",
]


def coarse_axis(spacing: Sequence[float], ratio: float = ANISOTROPY_RATIO) -> int | None:
    """The axis of the largest spacing when it exceeds ``ratio`` times the smallest, else None (isotropic enough)."""
    sp = np.asarray(spacing, dtype=float)
    if sp.size == 0 or sp.min() <= 0:
        return None
    return int(np.argmax(sp)) if sp.max() / sp.min() > ratio else None


def needs_resampling(spacing: Sequence[float] | None, target: Sequence[float] | None, *, rtol: float = 1e-3) -> bool:
    """Whether a volume of ``spacing`` differs from ``target`` (either None: no)."""
    if spacing is None or target is None or len(spacing) != len(target):
        return False
    return not np.allclose(np.asarray(spacing, float), np.asarray(target, float), rtol=rtol, atol=0)


def resampled_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> tuple[int, ...]:
    """The voxel counts that keep the physical extent: ``round(n * spacing / target)``, at least 1 per axis."""
    return tuple(
        max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target, strict=True)
    )


def _zoom(volume: np.ndarray, shape: Sequence[int], order: int, axes: Sequence[int] | None = None) -> np.ndarray:
    """``volume`` (spatial only) resized to ``shape`` along ``axes`` (default all) with spline ``order``."""
    axes = range(volume.ndim) if axes is None else axes
    factors = [shape[a] / volume.shape[a] if a in axes else 1.0 for a in range(volume.ndim)]
    if all(f == 1.0 for f in factors):
        return volume
    out = ndimage.zoom(volume, factors, order=order, mode="nearest", grid_mode=True, prefilter=order > 1)
    # zoom rounds its output shape itself; make sure it is exactly the one asked for.
    want = tuple(shape[a] if a in axes else volume.shape[a] for a in range(volume.ndim))
    if out.shape != want:
        raise AssertionError(f"internal: resampled to {out.shape}, expected {want}")
    return out


def resample_image(image: np.ndarray, shape: Sequence[int], *, coarse: int | None = None) -> np.ndarray:
    """A ``(C, *spatial)`` image resized to ``(C, *shape)``, float32, each channel alone.

    Args:
        coarse: the anisotropic axis (see :func:`coarse_axis`), interpolated linearly after the others
            (cubic); None: cubic in every axis.
    """
    shape = tuple(int(s) for s in shape)
    x = np.asarray(image, dtype=np.float32)
    if x.shape[1:] == shape:
        return x
    out = []
    for channel in x:
        if coarse is None:
            out.append(_zoom(channel, shape, order=3))
            continue
        fine = [a for a in range(channel.ndim) if a != coarse]
        out.append(_zoom(_zoom(channel, shape, order=3, axes=fine), shape, order=1, axes=[coarse]))
    return np.stack(out).astype(np.float32, copy=False)


def resample_labels(mask: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """A class-index map ``(*spatial)`` (or multi-label ``(K, *spatial)``) resized by nearest neighbour."""
    shape = tuple(int(s) for s in shape)
    m = np.asarray(mask)
    if m.shape[-len(shape):] == shape:
        return m
    if m.ndim == len(shape):
        return _zoom(m, shape, order=0)
    return np.stack([_zoom(layer, shape, order=0) for layer in m])


def resample_probabilities(probs: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Class probabilities ``(K, *spatial)`` resized to ``(K, *shape)`` by linear interpolation, float32."""
    shape = tuple(int(s) for s in shape)
    p = np.asarray(probs, dtype=np.float32)
    if p.shape[1:] == shape:
        return p
    return np.stack([_zoom(channel, shape, order=1) for channel in p]).astype(np.float32, copy=False)


def to_target_spacing(
    image: np.ndarray, mask: np.ndarray | None, *, spacing: Sequence[float] | None, target: Sequence[float] | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """A training pair ``(image (C, *spatial), mask)`` at ``target`` spacing (unchanged when already there).

    Raises:
        ValueError: a target is set but the volume's spacing is unknown or has another number of axes.
    """
    if target is None:
        return image, mask
    if spacing is None or len(spacing) != len(target) or len(target) != image.ndim - 1:
        raise ValueError(
            f"the plan resamples to spacing {list(target)}, but this volume's spacing is {spacing} "
            f"for {image.ndim - 1} spatial axes"
        )
    if not needs_resampling(spacing, target):
        return image, mask
    shape = resampled_shape(image.shape[1:], spacing, target)
    coarse = coarse_axis(target)
    image = resample_image(image, shape, coarse=coarse if coarse is not None else coarse_axis(spacing))
    return image, None if mask is None else resample_labels(mask, shape)
