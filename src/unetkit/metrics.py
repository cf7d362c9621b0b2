"""Segmentation metrics: Dice, IoU, precision, recall, HD95 and normalised surface Dice (NSD), 2D and 3D.

Inputs (numpy arrays or torch tensors)
    * Label maps: integer ``pred`` and ``target`` of the same shape, with ``num_classes`` given. Per-image
      functions take one image ``(*spatial)``; :func:`compute_metrics` takes a batch ``(N, *spatial)``.
    * One-hot / multi-label masks: ``(C, *spatial)`` (batch: ``(N, C, *spatial)``) with values in {0, 1}, and
      ``num_classes=None``.
    Every score is per class; ``mean_over_classes`` averages them (optionally without class 0).

Ignored pixels
    Target pixels equal to ``ignore_index`` (label maps) and pixels outside the optional ``valid`` mask are
    removed from both prediction and target before anything is counted: they are never TP/FP/FN, and for
    surface metrics both masks are background there (MONAI's ``ignore_index`` does the same).

Empty cases (per class, per image; never NaN, never inf)
    ============================  ================  ==========  =======  =========
    case                          Dice / IoU        precision   recall   HD95 / NSD
    ============================  ================  ==========  =======  =========
    target and prediction empty   1.0               1.0         1.0      0.0 / 1.0
    prediction empty, target not  0.0               0.0         0.0      D / 0.0
    target empty, prediction not  0.0               0.0         0.0      D / 0.0
    ============================  ================  ==========  =======  =========

    ``D`` is the largest distance possible in the image: the diagonal between the centres of opposite corner
    voxels in physical units, ``sqrt(sum(((n_i - 1) * spacing_i) ** 2))``.

Surfaces and distances
    The surface of a mask is the mask minus its binary erosion with the face-connected (connectivity 1:
    4-neighbour in 2D, 6-neighbour in 3D) structuring element and outside-image pixels treated as
    background, so a mask touching the image border has surface there. This is what MONAI's
    ``get_mask_edges`` does (scipy's default structure), which is why it was chosen. Distances between
    surfaces are exact Euclidean distances in physical units (``distance_transform_edt`` with
    ``sampling=spacing``).

    * HD95 = ``max(P95(d(S_pred -> S_target)), P95(d(S_target -> S_pred)))`` with linear-interpolated
      percentiles, as MONAI's ``HausdorffDistanceMetric(percentile=95)``.
    * NSD at tolerance ``tau`` (physical units) = ``(#{d(S_p -> S_t) <= tau} + #{d(S_t -> S_p) <= tau}) /
      (|S_p| + |S_t|)``, boundary size counted in voxels, as MONAI's ``SurfaceDiceMetric`` without sub-voxels.

Per-image mean vs dataset level
    :class:`MetricAccumulator` scores each image separately and averages the per-image scores (the usual way
    in medical imaging): every image weighs the same, and an image where a small class is missed counts as
    a 0 however few pixels it has. :class:`ConfusionMatrix` pools all pixels of the dataset first and scores
    once ("micro", the way aerial / land-cover mIoU is usually reported): large images and frequent classes
    weigh more, and a class absent from one image does not score that image at all. The two can differ a lot.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from unetkit._io import atomic_path

METRIC_NAMES = ("dice", "iou", "precision", "recall", "hd95", "nsd")
_SURFACE_METRICS = ("hd95", "nsd")

Spacing = float | Sequence[float] | None


# ----------------------------------------------------------------------------------------------- inputs
def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def class_masks(
    pred: Any, target: Any, *, num_classes: int | None = None, ignore_index: int = 255, valid: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class boolean masks of one image, with ignored pixels cleared in both.

    Args:
        pred / target: label maps ``(*spatial)`` (``num_classes`` given) or ``(C, *spatial)`` {0, 1} masks
            (``num_classes=None``).
        num_classes: number of classes of label maps; None for one-hot input.
        ignore_index: label-map target value excluded everywhere.
        valid: optional ``(*spatial)`` boolean mask of pixels to score (e.g. a field of view).

    Returns:
        ``(pred_masks, target_masks)``, each ``(C, *spatial)`` bool.

    Raises:
        ValueError: shape mismatch, values outside the classes, or non-binary one-hot values.
    """
    p, t = _to_numpy(pred), _to_numpy(target)
    if p.shape != t.shape:
        raise ValueError(f"prediction shape {p.shape} differs from target shape {t.shape}")
    spatial = p.shape if num_classes is not None else p.shape[1:]
    keep = np.ones(spatial, dtype=bool) if valid is None else _to_numpy(valid).astype(bool)
    if keep.shape != spatial:
        raise ValueError(f"valid mask shape {keep.shape} does not match the image's spatial shape {spatial}")
    if num_classes is None:
        for name, x in (("prediction", p), ("target", t)):
            if x.ndim < 2 or not np.isin(x, (0, 1)).all():
                raise ValueError(
                    f"one-hot {name} must be (C, *spatial) with values 0/1 (got shape {x.shape})"
                )
        return p.astype(bool) & keep, t.astype(bool) & keep
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    keep = keep & (t != ignore_index)
    for name, x in (("prediction", p), ("target", t)):
        bad = np.unique(x[keep & ((x < 0) | (x >= num_classes))])
        if bad.size:
            raise ValueError(f"{name} holds values {bad[:5].tolist()} outside 0..{num_classes - 1}")
    classes = np.arange(num_classes).reshape(-1, *([1] * p.ndim))
    return (p[None] == classes) & keep, (t[None] == classes) & keep


def _spacing(spacing: Spacing, ndim: int) -> np.ndarray:
    values = np.full(ndim, 1.0) if spacing is None else np.broadcast_to(np.asarray(spacing, float), (ndim,))
    if values.shape != (ndim,) or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"spacing must be {ndim} positive numbers (or one), got {spacing}")
    return values.astype(float)


def max_distance(shape: Sequence[int], spacing: Spacing = None) -> float:
    """Largest distance between two voxel centres of an image: the value HD95 takes when one side is empty."""
    sp = _spacing(spacing, len(shape))
    return float(np.sqrt(np.sum(((np.asarray(shape) - 1) * sp) ** 2)))


# ------------------------------------------------------------------------------------ overlap metrics
def _counts(pm: np.ndarray, tm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    axes = tuple(range(1, pm.ndim))
    tp = _count(pm & tm, axes)
    return tp, _count(pm, axes) - tp, _count(tm, axes) - tp


def _count(mask: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    # axis 0 (the batch) is never reduced, so np.sum returns an array here, never a numpy scalar
    return np.asarray(np.sum(mask, axis=axes, dtype=np.int64))


def _ratio(num: np.ndarray, den: np.ndarray, both_empty: np.ndarray) -> np.ndarray:
    """``num / den``, 1.0 where prediction and target are both empty, 0.0 where only ``den`` is 0."""
    out = np.divide(num, den, out=np.zeros(num.shape, dtype=float), where=den > 0)
    out[both_empty] = 1.0
    return out


def _overlap(name: str, tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    empty = tp + fp + fn == 0
    if name == "dice":
        return _ratio(2.0 * tp, 2 * tp + fp + fn, empty)
    if name == "iou":
        return _ratio(tp.astype(float), tp + fp + fn, empty)
    if name == "precision":
        return _ratio(tp.astype(float), tp + fp, empty)
    if name == "recall":
        return _ratio(tp.astype(float), tp + fn, empty)
    raise ValueError(f"unknown overlap metric {name!r}")


def dice_per_class(pred: Any, target: Any, **kwargs: Any) -> np.ndarray:
    """Dice ``2 TP / (2 TP + FP + FN)`` per class of one image, shape ``(C,)``.

    Keyword arguments as :func:`class_masks`. Both empty: 1.0; exactly one empty: 0.0.
    """
    return _overlap("dice", *_counts(*class_masks(pred, target, **kwargs)))


def iou_per_class(pred: Any, target: Any, **kwargs: Any) -> np.ndarray:
    """IoU (Jaccard) ``TP / (TP + FP + FN)`` per class, shape ``(C,)``. Both empty: 1.0; one empty: 0.0."""
    return _overlap("iou", *_counts(*class_masks(pred, target, **kwargs)))


def precision_per_class(pred: Any, target: Any, **kwargs: Any) -> np.ndarray:
    """Precision ``TP / (TP + FP)`` per class, shape ``(C,)``. Both empty: 1.0; one empty: 0.0."""
    return _overlap("precision", *_counts(*class_masks(pred, target, **kwargs)))


def recall_per_class(pred: Any, target: Any, **kwargs: Any) -> np.ndarray:
    """Recall ``TP / (TP + FN)`` per class, shape ``(C,)``. Both empty: 1.0; one empty: 0.0."""
    return _overlap("recall", *_counts(*class_masks(pred, target, **kwargs)))


# ------------------------------------------------------------------------------------ surface metrics
def surface(mask: np.ndarray) -> np.ndarray:
    """Boundary voxels of a boolean mask: ``mask & ~erode(mask)``, face connectivity, outside = background."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def surface_distances(
    pm: np.ndarray, tm: np.ndarray, spacing: Spacing = None
) -> tuple[np.ndarray, np.ndarray]:
    """Distances from each prediction-surface voxel to the target surface and back, in physical units.

    Args:
        pm / tm: boolean masks of one class, both non-empty.
        spacing: voxel size per axis (or one number); default 1.

    Returns:
        ``(d_pred_to_target, d_target_to_pred)``, 1-D float arrays.
    """
    sp = _spacing(spacing, pm.ndim)
    if not pm.any() or not tm.any():
        raise ValueError("surface distances need two non-empty masks")
    # Distances only depend on the surfaces, so work in their bounding box plus a 1-voxel margin.
    coords = np.argwhere(pm | tm)
    lo = np.maximum(coords.min(0) - 1, 0)
    hi = np.minimum(coords.max(0) + 2, pm.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    sp_surf, st_surf = surface(pm[box]), surface(tm[box])
    to_target = ndimage.distance_transform_edt(~st_surf, sampling=sp)
    to_pred = ndimage.distance_transform_edt(~sp_surf, sampling=sp)
    return to_target[sp_surf], to_pred[st_surf]


def _surface_scores(
    pm: np.ndarray,
    tm: np.ndarray,
    *,
    names: Sequence[str],
    spacing: Spacing,
    percentile: float,
    tolerance: np.ndarray,
) -> dict[str, np.ndarray]:
    """HD and/or NSD per class for ``(C, *spatial)`` masks, with the documented empty-case values."""
    n = pm.shape[0]
    out = {name: np.zeros(n) for name in names}
    worst = max_distance(pm.shape[1:], spacing)
    for c in range(n):
        p_any, t_any = bool(pm[c].any()), bool(tm[c].any())
        if not (p_any and t_any):
            if "hd95" in out:
                out["hd95"][c] = 0.0 if p_any == t_any else worst
            if "nsd" in out:
                out["nsd"][c] = 1.0 if p_any == t_any else 0.0
            continue
        d_pt, d_tp = surface_distances(pm[c], tm[c], spacing)
        if "hd95" in out:
            out["hd95"][c] = max(np.percentile(d_pt, percentile), np.percentile(d_tp, percentile))
        if "nsd" in out:
            hits = np.sum(d_pt <= tolerance[c]) + np.sum(d_tp <= tolerance[c])
            out["nsd"][c] = hits / (d_pt.size + d_tp.size)
    return out


def _tolerances(tolerance: float | Sequence[float], n: int) -> np.ndarray:
    values = (
        np.broadcast_to(np.asarray(tolerance, float), (n,))
        if np.ndim(tolerance) == 0
        else np.asarray(tolerance, float)
    )
    if values.shape != (n,) or not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError(f"NSD tolerance must be one or {n} finite non-negative numbers, got {tolerance}")
    return values


def hd95_per_class(
    pred: Any, target: Any, *, spacing: Spacing = None, percentile: float = 95.0, **kwargs: Any
) -> np.ndarray:
    """95th-percentile symmetric Hausdorff distance per class of one image, in physical units, ``(C,)``.

    Args:
        spacing: voxel size per spatial axis (or one number); default 1.
        percentile: 95 for HD95, 100 for the classic Hausdorff distance.
        **kwargs: as :func:`class_masks`.

    Both empty: 0.0. Exactly one empty: the image's largest voxel-centre distance (:func:`max_distance`).
    """
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    pm, tm = class_masks(pred, target, **kwargs)
    return _surface_scores(
        pm, tm, names=("hd95",), spacing=spacing, percentile=percentile, tolerance=np.zeros(len(pm))
    )["hd95"]


def nsd_per_class(
    pred: Any,
    target: Any,
    *,
    tolerance: float | Sequence[float] = 1.0,
    spacing: Spacing = None,
    **kwargs: Any,
) -> np.ndarray:
    """Normalised surface Dice per class of one image, ``(C,)``, in [0, 1].

    Args:
        tolerance: accepted boundary deviation in physical units (same units as ``spacing``), one number or
            one per class. A boundary voxel counts as correct when its distance is ``<= tolerance``.
        spacing: voxel size per spatial axis (or one number); default 1.
        **kwargs: as :func:`class_masks`.

    Both empty: 1.0. Exactly one empty: 0.0.
    """
    pm, tm = class_masks(pred, target, **kwargs)
    tol = _tolerances(tolerance, len(pm))
    return _surface_scores(pm, tm, names=("nsd",), spacing=spacing, percentile=95.0, tolerance=tol)["nsd"]


def image_metrics(
    pred: Any,
    target: Any,
    *,
    metrics: Sequence[str] = METRIC_NAMES,
    spacing: Spacing = None,
    nsd_tolerance: float | Sequence[float] = 1.0,
    hd_percentile: float = 95.0,
    **kwargs: Any,
) -> dict[str, np.ndarray]:
    """Several per-class metrics of one image at once (surfaces computed once), ``{name: (C,) array}``.

    ``metrics`` is a subset of :data:`METRIC_NAMES`; other keyword arguments as :func:`class_masks`.
    """
    unknown = sorted(set(metrics) - set(METRIC_NAMES))
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}; valid: {', '.join(METRIC_NAMES)}")
    pm, tm = class_masks(pred, target, **kwargs)
    counts = _counts(pm, tm)
    out = {name: _overlap(name, *counts) for name in metrics if name not in _SURFACE_METRICS}
    wanted = [name for name in metrics if name in _SURFACE_METRICS]
    if wanted:
        tol = _tolerances(nsd_tolerance, len(pm))
        out.update(
            _surface_scores(pm, tm, names=wanted, spacing=spacing, percentile=hd_percentile, tolerance=tol)
        )
    return {name: out[name] for name in metrics}


def compute_metrics(pred: Any, target: Any, *, valid: Any = None, **kwargs: Any) -> dict[str, np.ndarray]:
    """Batch-first :func:`image_metrics`: label maps ``(N, *spatial)`` or one-hot ``(N, C, *spatial)``,
    optional ``valid`` ``(N, *spatial)``. Returns ``{name: (N, C) array}``.
    """
    p, t = _to_numpy(pred), _to_numpy(target)
    if p.shape[:1] != t.shape[:1] or p.ndim < 2:
        raise ValueError(f"batch-first inputs must share the batch size, got {p.shape} and {t.shape}")
    rows = [
        image_metrics(p[i], t[i], valid=None if valid is None else _to_numpy(valid)[i], **kwargs)
        for i in range(p.shape[0])
    ]
    return {name: np.stack([r[name] for r in rows]) for name in rows[0]} if rows else {}


def mean_over_classes(values: Any, *, include_background: bool = True) -> Any:
    """Mean over the last (class) axis, optionally without class 0; NaNs (skipped classes) are left out.

    Returns a float for ``(C,)`` input, an array for ``(N, C)``; NaN where no class has a value.
    """
    v = np.asarray(values, dtype=float)
    if not include_background and v.shape[-1] > 1:
        v = v[..., 1:]
    present = ~np.isnan(v)
    count = present.sum(-1)
    total = np.where(present, v, 0.0).sum(-1)
    mean = np.divide(total, count, out=np.full(np.shape(total), np.nan), where=count > 0)
    return float(mean) if np.ndim(mean) == 0 else mean


# ----------------------------------------------------------------------------------------- streaming
class MetricAccumulator:
    """Per-image metrics over a dataset of label maps; reports per-class means and the per-image table.

    Args:
        num_classes: classes of the label maps.
        class_names: names for the table/summary (default ``"0"``, ``"1"``...).
        metrics: subset of :data:`METRIC_NAMES`.
        ignore_index: target value excluded everywhere.
        spacing: default voxel size (``update`` may override per image).
        nsd_tolerance: NSD tolerance in physical units (one, or one per class).
        include_background: whether the mean over classes includes class 0.
        skip_absent: leave a class out of an image's scores (NaN in the table, not averaged) when it is absent
            from both target and prediction; by default such a class scores its empty-case value (Dice 1.0).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        metrics: Sequence[str] = METRIC_NAMES,
        ignore_index: int = 255,
        spacing: Spacing = None,
        nsd_tolerance: float | Sequence[float] = 1.0,
        include_background: bool = False,
        skip_absent: bool = False,
    ) -> None:
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"got {len(class_names)} class names for {num_classes} classes")
        unknown = sorted(set(metrics) - set(METRIC_NAMES))
        if unknown:
            raise ValueError(f"unknown metric(s) {', '.join(unknown)}; valid: {', '.join(METRIC_NAMES)}")
        self.num_classes = num_classes
        self.class_names = [str(c) for c in (class_names or range(num_classes))]
        self.metrics = tuple(metrics)
        self.ignore_index = ignore_index
        self.spacing = spacing
        self.nsd_tolerance = nsd_tolerance
        self.include_background = include_background
        self.skip_absent = skip_absent
        self.image_ids: list[str] = []
        self._values: dict[str, list[np.ndarray]] = {m: [] for m in self.metrics}

    def __len__(self) -> int:
        return len(self.image_ids)

    def update(
        self,
        pred: Any,
        target: Any,
        *,
        image_id: str | None = None,
        spacing: Spacing = None,
        valid: Any = None,
    ) -> dict[str, np.ndarray]:
        """Score one image (label maps ``(*spatial)``) and store it; returns ``{metric: (C,) array}``."""
        scores = image_metrics(
            pred,
            target,
            metrics=self.metrics,
            num_classes=self.num_classes,
            ignore_index=self.ignore_index,
            valid=valid,
            spacing=self.spacing if spacing is None else spacing,
            nsd_tolerance=self.nsd_tolerance,
        )
        if self.skip_absent:
            pm, tm = class_masks(
                pred, target, num_classes=self.num_classes, ignore_index=self.ignore_index, valid=valid
            )
            absent = ~(pm.reshape(len(pm), -1).any(1) | tm.reshape(len(tm), -1).any(1))
            scores = {m: np.where(absent, np.nan, v) for m, v in scores.items()}
        for m, v in scores.items():
            self._values[m].append(v)
        self.image_ids.append(str(image_id) if image_id is not None else str(len(self.image_ids)))
        return scores

    def per_image(self, metric: str) -> np.ndarray:
        """``(images, C)`` array of one metric (NaN where skipped)."""
        return np.array(self._values[metric], dtype=float).reshape(-1, self.num_classes)

    def per_class(self) -> dict[str, np.ndarray]:
        """``{metric: (C,)}`` mean over images (skipped values left out; NaN if a class was never scored)."""
        return {m: mean_over_classes(self.per_image(m).T) for m in self.metrics}

    def summary(self) -> dict[str, float]:
        """``{"dice": mean over classes, "dice/<class>": per-class mean, ...}`` for every metric."""
        out: dict[str, float] = {}
        for m, per_class in self.per_class().items():
            out[m] = mean_over_classes(per_class, include_background=self.include_background)
            out.update({f"{m}/{name}": float(v) for name, v in zip(self.class_names, per_class, strict=True)})
        return out

    def rows(self) -> list[dict[str, Any]]:
        """Per-image table: ``image``, then ``<metric>`` (mean over classes) and ``<metric>/<class>`` columns."""
        rows: list[dict[str, Any]] = []
        for i, image_id in enumerate(self.image_ids):
            row: dict[str, Any] = {"image": image_id}
            for m in self.metrics:
                values = self._values[m][i]
                row[m] = mean_over_classes(values, include_background=self.include_background)
                row.update(
                    {f"{m}/{name}": float(v) for name, v in zip(self.class_names, values, strict=True)}
                )
            rows.append(row)
        return rows

    def write_csv(self, path: str | Path) -> None:
        """Write :meth:`rows` to ``path`` atomically (temp file in the same folder, then rename)."""
        path = Path(path)
        rows = self.rows()
        fields = list(rows[0]) if rows else ["image"]
        with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)


class ConfusionMatrix:
    """Dataset-level ("micro") scores from a confusion matrix pooled over every pixel of every image.

    ``matrix[i, j]`` counts pixels of target class ``i`` predicted as ``j``; ignored pixels are not counted.
    Per-class scores follow the module's empty-case rules (a class never present in target or prediction
    scores 1.0). See the module docstring for how this differs from :class:`MetricAccumulator`.
    """

    def __init__(self, *, num_classes: int, ignore_index: int = 255) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred: Any, target: Any, *, valid: Any = None) -> None:
        """Add label maps of any shape (one image or a batch); ``valid`` optionally restricts the pixels."""
        p, t = _to_numpy(pred), _to_numpy(target)
        if p.shape != t.shape:
            raise ValueError(f"prediction shape {p.shape} differs from target shape {t.shape}")
        keep = t != self.ignore_index
        if valid is not None:
            keep &= _to_numpy(valid).astype(bool)
        p, t = p[keep].astype(np.int64), t[keep].astype(np.int64)
        c = self.num_classes
        for name, x in (("prediction", p), ("target", t)):
            if x.size and (x.min() < 0 or x.max() >= c):
                raise ValueError(f"{name} holds values outside 0..{c - 1}")
        self.matrix += np.bincount(t * c + p, minlength=c * c).reshape(c, c)

    def _scores(self, name: str) -> np.ndarray:
        tp = np.diag(self.matrix)
        return _overlap(name, tp, self.matrix.sum(0) - tp, self.matrix.sum(1) - tp)

    def iou(self) -> np.ndarray:
        """Per-class IoU ``(C,)``."""
        return self._scores("iou")

    def dice(self) -> np.ndarray:
        """Per-class Dice (F1) ``(C,)``."""
        return self._scores("dice")

    def precision(self) -> np.ndarray:
        return self._scores("precision")

    def recall(self) -> np.ndarray:
        return self._scores("recall")

    def mean_iou(self, *, include_background: bool = True) -> float:
        """mIoU: mean of per-class IoU (class 0 dropped when ``include_background`` is False)."""
        return float(mean_over_classes(self.iou(), include_background=include_background))

    def mean_dice(self, *, include_background: bool = True) -> float:
        return float(mean_over_classes(self.dice(), include_background=include_background))

    def pixel_accuracy(self) -> float:
        """Fraction of counted pixels predicted correctly (1.0 when nothing was counted)."""
        total = int(self.matrix.sum())
        return float(np.trace(self.matrix)) / total if total else 1.0


__all__ = [
    "METRIC_NAMES",
    "ConfusionMatrix",
    "MetricAccumulator",
    "class_masks",
    "compute_metrics",
    "dice_per_class",
    "hd95_per_class",
    "image_metrics",
    "iou_per_class",
    "max_distance",
    "mean_over_classes",
    "nsd_per_class",
    "precision_per_class",
    "recall_per_class",
    "surface",
    "surface_distances",
]
