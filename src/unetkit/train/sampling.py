"""Patch sampling for training: uniform crops plus foreground-centred crops for rare classes."""

from __future__ import annotations

import numpy as np


def sample_patch(
    image: np.ndarray,
    mask: np.ndarray,
    *,
    patch_size: tuple[int, ...],
    rng: np.random.Generator,
    foreground: bool,
    ignore_index: int = 255,
    background: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Crop one patch; pad (image 0, mask ``ignore_index``) where the image is smaller than the patch.

    Args:
        image: ``(C, *spatial)`` float32, already normalised.
        mask: ``(*spatial)`` int64 class indices.
        patch_size: spatial patch size.
        rng: the sampler's random generator (the only source of randomness, for exact resume).
        foreground: centre the patch on a random labelled foreground pixel (class > 0) when one exists,
            picking the class first so that rare classes are sampled as often as common ones.
        background: class 0 is background (never a centre); False when every class is a real one
            (e.g. land-cover classes from a colour table), so class 0 is centred on like the others.

    Returns:
        ``(image_patch, mask_patch)`` of spatial size ``patch_size``.
    """
    spatial = mask.shape
    if len(patch_size) != len(spatial):
        raise ValueError(f"patch_size {patch_size} does not match the image's {len(spatial)} spatial dims")
    centre = _foreground_centre(mask, rng, ignore_index, background=background) if foreground else None
    starts = []
    for axis, (size, patch) in enumerate(zip(spatial, patch_size, strict=True)):
        lo, hi = min(0, size - patch), max(0, size - patch)
        if centre is not None:
            start = int(np.clip(centre[axis] - patch // 2, lo, hi))
        else:
            start = int(rng.integers(lo, hi + 1))
        starts.append(start)
    return _crop(image, starts, patch_size, fill=0.0), _crop(
        mask[None], starts, patch_size, fill=ignore_index
    )[0]


def _foreground_centre(
    mask: np.ndarray, rng: np.random.Generator, ignore_index: int, *, background: bool = True
) -> tuple[int, ...] | None:
    classes = [c for c in np.unique(mask) if c != ignore_index and (c != 0 or not background)]
    if not classes:
        return None
    chosen = classes[int(rng.integers(len(classes)))]
    coords = np.flatnonzero(mask == chosen)
    flat = coords[int(rng.integers(len(coords)))]
    return tuple(int(i) for i in np.unravel_index(flat, mask.shape))


def _crop(array: np.ndarray, starts: list[int], patch: tuple[int, ...], *, fill: float) -> np.ndarray:
    """Crop ``array[:, start:start+patch]`` per axis; negative starts / overruns are filled with ``fill``."""
    out = np.full((array.shape[0], *patch), fill, dtype=array.dtype)
    src, dst = [slice(None)], [slice(None)]
    for start, size, length in zip(starts, patch, array.shape[1:], strict=True):
        a, b = max(start, 0), min(start + size, length)
        src.append(slice(a, b))
        dst.append(slice(a - start, b - start))
    out[tuple(dst)] = array[tuple(src)]
    return out
