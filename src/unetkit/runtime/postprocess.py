"""Turning probabilities into masks and cleaning them up (numpy + scipy.ndimage, 2D or 3D).

Masks are either a *label map* (integer array of class ids, 0 = background) or a boolean array (one binary
class, e.g. one channel of a multilabel output). The clean-up functions work per class on label maps and
treat a boolean mask as class 1; they return the same kind they were given.

Connectivity follows :func:`scipy.ndimage.generate_binary_structure`: 1 = neighbours sharing a face
(4 in 2D, 6 in 3D), ``ndim`` = also diagonal neighbours (8 in 2D, 26 in 3D).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy import ndimage

MODES = ("auto", "binary", "multilabel", "multiclass")


def probs_to_mask(probs: np.ndarray, *, mode: str = "auto", threshold: float = 0.5) -> np.ndarray:
    """Decide a mask from per-class probabilities ``(K, *spatial)``.

    Args:
        probs: probabilities, channels first.
        mode: ``binary`` (K = 1: ``p > threshold`` as a 0/1 label map), ``multilabel`` (each channel
            thresholded independently: bool ``(K, *spatial)``), ``multiclass`` (argmax over channels:
            label map of class ids), or ``auto`` (binary when K = 1, multiclass otherwise).
        threshold: for binary and multilabel; a pixel is foreground when strictly above it.

    Returns:
        ``(*spatial)`` int64 label map (binary, multiclass) or ``(K, *spatial)`` bool (multilabel).
    """
    probs = np.asarray(probs)
    if probs.ndim < 2:
        raise ValueError(f"probs must be (K, *spatial), got shape {probs.shape}")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if mode == "auto":
        mode = "binary" if probs.shape[0] == 1 else "multiclass"
    if mode == "binary":
        if probs.shape[0] != 1:
            raise ValueError(
                f"binary mode needs one channel, got {probs.shape[0]}; use multiclass or multilabel"
            )
        return (probs[0] > threshold).astype(np.int64)
    if mode == "multilabel":
        return probs > threshold
    if probs.shape[0] == 2:  # the same labels as argmax (ties go to class 0), in one pass instead of a strided one
        return np.greater(probs[1], probs[0]).astype(np.int64)
    return np.argmax(probs, axis=0).astype(np.int64)


def probabilities_to_labels(probs: np.ndarray, *, threshold: float = 0.5) -> np.ndarray:
    """Label map from ``(K, *spatial)`` probabilities: ``p > threshold`` for one channel, argmax for several.

    Returns:
        ``(*spatial)`` int64 class ids (0/1 for one channel).
    """
    return probs_to_mask(probs, mode="auto", threshold=threshold)


def _classes(mask: np.ndarray, classes: Iterable[int] | None, background: int) -> list[int]:
    if classes is None:
        return [int(c) for c in np.unique(mask) if c != background]
    return [int(c) for c in classes]


def _check_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.dtype != bool and not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"mask must be a bool or integer label map, got dtype {mask.dtype}")
    if mask.ndim not in (2, 3):
        raise ValueError(f"mask must be 2D or 3D, got shape {mask.shape}")
    return mask


def _structure(ndim: int, connectivity: int) -> np.ndarray:
    if not 1 <= connectivity <= ndim:
        raise ValueError(f"connectivity must be between 1 and {ndim} for a {ndim}D mask, got {connectivity}")
    return ndimage.generate_binary_structure(ndim, connectivity)


def _component_sizes(binary: np.ndarray, structure: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Component labels of ``binary`` and each label's pixel count (index 0 = outside)."""
    labels, _ = ndimage.label(binary, structure=structure)
    return labels, np.bincount(labels.ravel())


def remove_small_components(
    mask: np.ndarray,
    *,
    min_size: int,
    classes: Iterable[int] | None = None,
    connectivity: int = 1,
    background: int = 0,
) -> np.ndarray:
    """Set connected components with fewer than ``min_size`` pixels to background, class by class.

    Args:
        mask: label map or bool mask, 2D or 3D.
        min_size: components strictly smaller than this are removed (0 or 1 keeps everything).
        classes: classes to clean (default: every non-background class present).
        connectivity: see the module docstring.
        background: the label removed pixels get.

    Returns:
        A cleaned copy of the same dtype.
    """
    mask = _check_mask(mask)
    if min_size < 0:
        raise ValueError(f"min_size must be >= 0, got {min_size}")
    if mask.dtype == bool:
        return remove_small_components(
            mask.astype(np.uint8), min_size=min_size, connectivity=connectivity
        ).astype(bool)
    out = mask.copy()
    structure = _structure(mask.ndim, connectivity)
    for c in _classes(mask, classes, background):
        labels, sizes = _component_sizes(mask == c, structure)
        small = sizes < min_size
        small[0] = False
        out[small[labels]] = background
    return out


def keep_largest_component(
    mask: np.ndarray, *, classes: Iterable[int] | None = None, connectivity: int = 1, background: int = 0
) -> np.ndarray:
    """Keep only the largest connected component of each class (ties: the first in scan order).

    Returns:
        A copy of the same dtype with the other components set to ``background``.
    """
    mask = _check_mask(mask)
    if mask.dtype == bool:
        return keep_largest_component(mask.astype(np.uint8), connectivity=connectivity).astype(bool)
    out = mask.copy()
    structure = _structure(mask.ndim, connectivity)
    for c in _classes(mask, classes, background):
        labels, sizes = _component_sizes(mask == c, structure)
        if len(sizes) <= 2:  # zero or one component
            continue
        largest = int(np.argmax(sizes[1:])) + 1
        out[(labels > 0) & (labels != largest)] = background
    return out


def fill_holes(
    mask: np.ndarray,
    *,
    classes: Iterable[int] | None = None,
    max_hole_size: int | None = None,
    connectivity: int = 1,
    background: int = 0,
) -> np.ndarray:
    """Fill holes (background regions enclosed by a class) with that class, class by class.

    A hole is a region of other labels that the class encloses (:func:`scipy.ndimage.binary_fill_holes`);
    only its *background* pixels are filled, so a different class inside (e.g. a nucleus in a cell) is kept.

    Args:
        mask: label map or bool mask, 2D or 3D.
        classes: classes to fill (default: every non-background class present, in increasing order).
        max_hole_size: fill only holes of at most this many pixels (default: all holes).
        connectivity: connectivity of the *holes*: 1 means background touching the outside only diagonally
            is still enclosed; also how enclosed regions are split into separate holes for ``max_hole_size``.
        background: the label that holes are made of.

    Returns:
        A filled copy of the same dtype.
    """
    mask = _check_mask(mask)
    if mask.dtype == bool:
        filled = fill_holes(mask.astype(np.uint8), max_hole_size=max_hole_size, connectivity=connectivity)
        return filled.astype(bool)
    out = mask.copy()
    structure = _structure(mask.ndim, connectivity)
    for c in _classes(mask, classes, background):
        region = out == c
        holes = ndimage.binary_fill_holes(region, structure=structure) & ~region
        if max_hole_size is not None:
            labels, sizes = _component_sizes(holes, structure)
            keep = sizes <= max_hole_size
            keep[0] = False
            holes = keep[labels]
        out[holes & (out == background)] = c
    return out


def label_instances(
    mask: np.ndarray, *, classes: Iterable[int] | None = None, connectivity: int = 1, background: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Number the connected components of every class as separate instances.

    Returns:
        ``(instances, instance_class)``: an int32 array of the mask's shape with ids ``1..N`` (0 where no
        instance; numbered class by class, then in scan order), and an int64 array of length ``N + 1`` with
        the class of each id (``instance_class[0] = background``).
    """
    mask = _check_mask(mask)
    if mask.dtype == bool:
        mask = mask.astype(np.uint8)
    structure = _structure(mask.ndim, connectivity)
    instances = np.zeros(mask.shape, dtype=np.int32)
    owner = [background]
    for c in _classes(mask, classes, background):
        labels, count = ndimage.label(mask == c, structure=structure)
        instances[labels > 0] = labels[labels > 0] + (len(owner) - 1)
        owner += [c] * count
    return instances, np.asarray(owner, dtype=np.int64)


def postprocess(
    probs: np.ndarray,
    *,
    mode: str = "auto",
    threshold: float = 0.5,
    min_size: int = 0,
    fill: bool = False,
    largest_only: bool = False,
    connectivity: int = 1,
) -> np.ndarray:
    """Probabilities ``(K, *spatial)`` to a cleaned mask: decide, drop small components, fill holes, keep largest.

    Multilabel outputs are cleaned channel by channel. See :func:`probs_to_mask` for ``mode``/``threshold``.
    """
    mask = probs_to_mask(probs, mode=mode, threshold=threshold)
    if mask.dtype == bool and mask.ndim == np.asarray(probs).ndim:  # multilabel: (K, *spatial)
        return np.stack(
            [
                _clean(m, min_size=min_size, fill=fill, largest_only=largest_only, connectivity=connectivity)
                for m in mask
            ]
        )
    return _clean(mask, min_size=min_size, fill=fill, largest_only=largest_only, connectivity=connectivity)


def _clean(
    mask: np.ndarray, *, min_size: int, fill: bool, largest_only: bool, connectivity: int
) -> np.ndarray:
    if min_size > 1:
        mask = remove_small_components(mask, min_size=min_size, connectivity=connectivity)
    if fill:
        mask = fill_holes(mask, connectivity=connectivity)
    if largest_only:
        mask = keep_largest_component(mask, connectivity=connectivity)
    return mask
