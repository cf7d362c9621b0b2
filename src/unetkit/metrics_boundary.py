"""Boundary and consistency metrics, and the statistics ``unetkit compare`` reports them with.

Everything here is a pure function of label maps (integer ``(*spatial)`` arrays) or of score lists.

Boundary F1 at a tolerance
    The boundary of a mask is the mask minus its face-connected erosion (:func:`unetkit.metrics.surface`;
    the image border counts as background). Precision is the fraction of the predicted boundary's pixels
    that lie within ``tolerance`` (physical units with ``spacing``, else pixels) of the true boundary,
    recall the fraction of the true boundary's pixels within ``tolerance`` of the predicted one, and
    boundary F1 their harmonic mean (0 when both are 0). Distances are exact Euclidean distances
    (``scipy.ndimage.distance_transform_edt``).

Empty masks (per class, per image; never NaN)
    ===============================  ===========  ===========================
    case                             boundary F1  Dice between two label maps
    ===============================  ===========  ===========================
    both empty                       1.0          1.0
    one empty, the other not         0.0          0.0
    ===============================  ===========  ===========================

Consistency
    * :func:`view_agreement`: the mean Dice over every pair of de-augmented TTA views (1.0 for one view).
    * :func:`shift_consistency`: the Dice between the prediction of an image and the prediction of the same
      image shifted by ``k`` pixels, shifted back, on the pixels both cover (the shift is a crop, so no
      padding enters either prediction).
    * Agreement between folds or seeds is :func:`view_agreement` of their label maps for one image.

Intervals
    :func:`bootstrap_mean` and :func:`paired_difference` use the percentile bootstrap with
    :data:`BOOTSTRAP_RESAMPLES` resamples of the images (seeded, so a report is reproducible).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from unetkit.metrics import dice_per_class, surface

BOOTSTRAP_RESAMPLES = 10_000
# Fewer images than this and the bootstrap's interval is too coarse to settle a sign: no verdict is given.
MIN_IMAGES_FOR_VERDICT = 5
DEFAULT_TOLERANCE_PX = 2.0


def boundary_f1(pred: Any, target: Any, *, tolerance: float = DEFAULT_TOLERANCE_PX,
                spacing: Sequence[float] | None = None) -> float:  # fmt: skip
    """Boundary F1 of two boolean masks of one class (see the module docstring).

    Args:
        pred / target: boolean (or {0, 1}) masks ``(*spatial)`` of the same shape.
        tolerance: largest distance (pixels, or the units of ``spacing``) at which a boundary pixel counts.
        spacing: pixel size per axis; None = 1.

    Returns:
        The F1 score in [0, 1]; 1.0 when both masks are empty, 0.0 when one of them is.

    Raises:
        ValueError: shapes differ or the tolerance is negative.
    """
    p, t = np.asarray(pred).astype(bool), np.asarray(target).astype(bool)
    if p.shape != t.shape:
        raise ValueError(f"prediction {p.shape} and target {t.shape} differ in shape")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    bp, bt = surface(p), surface(t)
    if not bp.any() or not bt.any():
        return float(bp.any() == bt.any())
    sampling = None if spacing is None else [float(s) for s in spacing]
    to_target = ndimage.distance_transform_edt(~bt, sampling=sampling)
    to_pred = ndimage.distance_transform_edt(~bp, sampling=sampling)
    precision = float(np.mean(to_target[bp] <= tolerance))
    recall = float(np.mean(to_pred[bt] <= tolerance))
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def boundary_f1_labels(pred: Any, target: Any, *, num_classes: int, first: int = 1,
                       tolerance: float = DEFAULT_TOLERANCE_PX, ignore_index: int = 255,
                       spacing: Sequence[float] | None = None) -> float:  # fmt: skip
    """:func:`boundary_f1` of each class ``first..num_classes-1`` of two label maps, averaged.

    Target pixels equal to ``ignore_index`` are background in both maps (as in :mod:`unetkit.metrics`).
    """
    p, t = np.asarray(pred), np.asarray(target)
    valid = t != ignore_index
    scores = [boundary_f1((p == c) & valid, (t == c) & valid, tolerance=tolerance, spacing=spacing)
              for c in range(first, max(num_classes, first + 1))]  # fmt: skip
    return float(np.mean(scores))


def label_dice(a: Any, b: Any, *, num_classes: int, first: int = 1) -> float:
    """Dice of two label maps, averaged over the classes ``first..num_classes-1`` (both empty: 1.0)."""
    values = dice_per_class(np.asarray(a), np.asarray(b), num_classes=num_classes)
    return float(np.mean(values[first:] if num_classes > first else values))


def view_agreement(views: Sequence[Any], *, num_classes: int = 2, first: int = 1) -> float:
    """Mean :func:`label_dice` over every pair of label maps (de-augmented TTA views, folds or seeds).

    Returns:
        1.0 for a single map (nothing to disagree with).

    Raises:
        ValueError: no maps.
    """
    if not views:
        raise ValueError("view agreement needs at least one label map")
    pairs = list(itertools.combinations(range(len(views)), 2))
    if not pairs:
        return 1.0
    return float(np.mean([label_dice(views[i], views[j], num_classes=num_classes, first=first) for i, j in pairs]))


def shift_consistency(predict: Callable[[np.ndarray], np.ndarray], image: np.ndarray, *, shift: Sequence[int],
                      num_classes: int = 2, first: int = 1) -> float:  # fmt: skip
    """Dice between ``predict(image)`` and the prediction of ``image`` shifted by ``shift``, shifted back.

    The shifted image is ``image`` without its first ``shift[i]`` pixels along spatial axis ``i`` (its
    content moves towards the origin); its prediction, moved back, covers the original's pixels from
    ``shift`` on, and the two are compared there.

    Args:
        predict: ``(C, *spatial)`` image -> ``(*spatial)`` label map of the same spatial size.
        image: ``(C, *spatial)``.
        shift: non-negative pixels per spatial axis, each smaller than that axis.

    Raises:
        ValueError: a shift of the wrong length, negative, or as large as the image.
    """
    spatial = image.shape[1:]
    if len(shift) != len(spatial) or any(k < 0 or k >= n for k, n in zip(shift, spatial, strict=True)):
        raise ValueError(f"shift {tuple(shift)} must give 0 <= k < size for each spatial axis of {spatial}")
    crop = (slice(None),) + tuple(slice(k, None) for k in shift)
    base = np.asarray(predict(image))[crop[1:]]
    moved = np.asarray(predict(image[crop]))
    return label_dice(base, moved, num_classes=num_classes, first=first)


@dataclass(frozen=True)
class Interval:
    """A mean (or mean difference) with its percentile-bootstrap interval."""

    mean: float
    low: float
    high: float
    n: int = 0  # images resampled

    @property
    def significant(self) -> bool:
        """Whether the interval excludes 0 (for a difference: the sign is settled at this level), from at least
        :data:`MIN_IMAGES_FOR_VERDICT` images."""
        return self.n >= MIN_IMAGES_FOR_VERDICT and (self.low > 0 or self.high < 0)


def bootstrap_mean(values: Sequence[float], *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
                   level: float = 0.95) -> Interval:  # fmt: skip
    """The mean of ``values`` and its percentile-bootstrap interval (images resampled with replacement).

    Raises:
        ValueError: no values, a non-finite value, ``resamples < 1`` or ``level`` outside (0, 1).
    """
    x = np.asarray(values, dtype=float)
    if x.size == 0 or not np.isfinite(x).all():
        raise ValueError(f"bootstrap needs at least one value, all finite; got {x.size} value(s)")
    if resamples < 1 or not 0 < level < 1:
        raise ValueError(f"resamples must be >= 1 and level in (0, 1), got {resamples} and {level}")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Interval(mean=float(x.mean()), low=float(low), high=float(high), n=int(x.size))


def paired_difference(base: Sequence[float], other: Sequence[float], *, resamples: int = BOOTSTRAP_RESAMPLES,
                      seed: int = 0, level: float = 0.95) -> Interval:  # fmt: skip
    """Mean of ``other - base`` over the same images, with its paired bootstrap interval.

    Raises:
        ValueError: the two lists differ in length (they must score the same images), or as
            :func:`bootstrap_mean`.
    """
    a, b = np.asarray(base, dtype=float), np.asarray(other, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired scores must cover the same images: {a.size} vs {b.size} values")
    return bootstrap_mean(b - a, resamples=resamples, seed=seed, level=level)


def describe_difference(label: str, metric: str, diff: Interval, *, level: float = 0.95) -> str:
    """``"U-Net++ vs U-Net: boundary F1 +0.012 [-0.004, +0.027], not significant"``."""
    if diff.n < MIN_IMAGES_FOR_VERDICT:
        verdict = f"too few images ({diff.n}) to tell"
    else:
        verdict = ("significant" if diff.significant else "not significant") + f" at {level:.0%}"
    return f"{label}: {metric} {diff.mean:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}], {verdict}"


__all__ = [
    "BOOTSTRAP_RESAMPLES", "DEFAULT_TOLERANCE_PX", "MIN_IMAGES_FOR_VERDICT", "Interval", "bootstrap_mean", "boundary_f1",
    "boundary_f1_labels", "describe_difference", "label_dice", "paired_difference", "shift_consistency",
    "view_agreement",
]  # fmt: skip
