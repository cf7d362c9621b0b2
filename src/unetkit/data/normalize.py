"""Intensity normalisation applied identically in training and inference."""

from __future__ import annotations

import numpy as np

NORMALIZATIONS = ("zscore", "minmax", "none")


def normalize(image: np.ndarray, *, mode: str = "zscore", eps: float = 1e-6) -> np.ndarray:
    """Normalise one image per channel.

    Args:
        image: ``(C, *spatial)`` array of any numeric dtype.
        mode: ``zscore`` (subtract the channel mean, divide by its std), ``minmax`` (to [0, 1]) or ``none``.

    Returns:
        float32 array of the same shape.
    """
    x = image.astype(np.float32, copy=True)
    if mode == "none":
        return x
    axes = tuple(range(1, x.ndim))
    if mode == "zscore":
        mean = x.mean(axis=axes, keepdims=True)
        std = x.std(axis=axes, keepdims=True)
        return (x - mean) / np.maximum(std, eps)
    if mode == "minmax":
        lo = x.min(axis=axes, keepdims=True)
        hi = x.max(axis=axes, keepdims=True)
        return (x - lo) / np.maximum(hi - lo, eps)
    raise ValueError(f"unknown normalization {mode!r}; choose one of {', '.join(NORMALIZATIONS)}")
