"""Score predictions against labels, as ``unetkit evaluate`` reports them: per image, the mean, the worst cases."""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unetkit._io import atomic_path, write_json_atomic
from unetkit.config import Plan
from unetkit.runtime.run import label_classes

METRICS = ("dice", "iou", "precision", "recall")
SURFACE_METRICS = ("hd95", "nsd")
# Surface Dice tolerance in mm (the units of the spacing): one voxel of the common 1 mm MRI grid.
DEFAULT_NSD_TOLERANCE_MM = 1.0


def score_labels(
    pred: np.ndarray, target: np.ndarray, plan: Plan, names: Sequence[str], *, spacing: Sequence[float] | None = None,
    nsd_tolerance: float = DEFAULT_NSD_TOLERANCE_MM, per_class: bool = False,
) -> dict[str, float]:
    """Each metric in ``names`` for one image, averaged over the classes (background left out when it is one).

    Args:
        spacing: voxel size per axis (mm for NIfTI): HD95 and the NSD tolerance are then in mm; None = 1.
        nsd_tolerance: surface Dice tolerance in the units of ``spacing``.
        per_class: also one column per metric and class, ``<metric>_<class name>``.

    Empty classes never give NaN (see :mod:`unetkit.metrics`): absent from both prediction and label, a class
    scores Dice 1, HD95 0 and NSD 1; missed or hallucinated, Dice 0, NSD 0 and HD95 the image's diagonal.
    """
    from unetkit.metrics import image_metrics

    classes = label_classes(plan)
    values = image_metrics(
        pred, target, metrics=tuple(names), num_classes=classes, ignore_index=plan.data.ignore_index,
        spacing=spacing, nsd_tolerance=nsd_tolerance,
    )  # fmt: skip
    first = 1 if plan.data.background else 0
    out = {name: float(np.mean(v[first:])) for name, v in values.items()}
    if per_class:
        labels = class_names(plan, classes)
        for name, v in values.items():
            out.update({f"{name}_{labels[c]}": float(v[c]) for c in range(first, classes)})
    return out


def class_names(plan: Plan, classes: int) -> list[str]:
    """The plan's class names, file-name safe, or ``class_<i>``."""
    from unetkit.data.masks import default_class_names

    names = list(plan.data.classes) if len(plan.data.classes) == classes else default_class_names(classes)
    return [re.sub(r"[^A-Za-z0-9_.-]+", "_", str(n)) for n in names]


def summarise(rows: Sequence[dict[str, Any]], names: Sequence[str]) -> dict[str, float]:
    """The mean of each metric over the images (NaN-aware, though the scores above are never NaN)."""
    summary: dict[str, float] = {name: float(np.nanmean([r[name] for r in rows])) for name in names}
    summary["images"] = len(rows)
    return summary


def write_scores(out: Path, rows: list[dict[str, Any]], summary: dict[str, float]) -> None:
    """``out/per_image.csv`` and ``out/summary.json``, each written atomically."""
    with atomic_path(out / "per_image.csv") as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    write_json_atomic(out / "summary.json", summary)


def write_worst(
    folder: Path, cases: list[tuple[float, Any, np.ndarray]], n: int, *, background: bool = True, ignore_index: int = 255
) -> None:
    """Overlays of prediction and truth for the ``n`` cases with the lowest score (2D images only).

    ``background`` and ``ignore_index`` are the plan's ``data`` fields: without a background class every class
    is drawn; unlabelled truth pixels never are.
    """
    from unetkit.data.io import write_image
    from unetkit.runtime.overlay import drawn_labels, make_overlay

    folder.mkdir(exist_ok=True)
    for _, sample, labels in sorted(cases, key=lambda c: c[0])[:n]:
        if labels.ndim != 2:
            continue
        image = np.moveaxis(sample.image[:3], 0, -1) if sample.image.shape[0] >= 3 else sample.image[0]
        # Keys of listed samples can be long relative paths; keep their last two parts, file-name safe.
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", "_".join(Path(sample.key).parts[-2:])).lstrip("._")
        pred = drawn_labels(labels, background=background)
        write_image(folder / f"{safe}_pred.png", np.moveaxis(make_overlay(image, pred), -1, 0))
        truth = drawn_labels(sample.mask, background=background, ignore=ignore_index)
        write_image(folder / f"{safe}_truth.png", np.moveaxis(make_overlay(image, truth), -1, 0))


__all__ = ["DEFAULT_NSD_TOLERANCE_MM", "METRICS", "SURFACE_METRICS", "class_names", "score_labels", "summarise", "write_scores", "write_worst"]
