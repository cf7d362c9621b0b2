"""Score every trained variant at every TTA level on the held-out images, one row of metrics per image.

Per image and (variant, TTA level): Dice, IoU, precision, recall, HD95 and surface Dice (NSD) as
``unetkit evaluate`` computes them (HD95/NSD in mm for volumes), boundary F1 at the tolerance, the agreement
of the TTA level's de-augmented views (None for ``none``, which has one view), shift consistency (mean over
the shifts, and each shift's own column ``shift_consistency_<k>``), the agreement of the fold models (with
folds; TTA ``none``), and the seconds the prediction took.

Scoring a variant can take longer than training it (every TTA level, each shift, on every held-out image), so
each variant's rows are kept in its run folder (:data:`~unetkit.compare.options.SCORES_FILE`, written
atomically) and reused by a rerun with the same finished training, held-out images and scoring options; the
reused rows keep the seconds measured when they were scored.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from unetkit._io import write_json_atomic
from unetkit.compare.options import DONE_MARKER, SCORES_FILE
from unetkit.config import Plan
from unetkit.metrics_boundary import boundary_f1_labels, shift_consistency, view_agreement
from unetkit.runtime.run import label_classes

if TYPE_CHECKING:
    from unetkit.compare.options import CompareOptions
    from unetkit.data.dataset import LoadedSample
    from unetkit.infer.predictor import Predictor


@dataclass
class HeldOut:
    """The held-out images: each with the index of the (fold) run that did not train on it."""

    samples: list[LoadedSample]
    fold_of: list[int]
    description: str


@dataclass
class Scores:
    """Per-image metric rows: ``rows[model][tta]`` is one dict per held-out image (same order everywhere)."""

    keys: list[str]
    held_out: str
    rows: dict[str, dict[str, list[dict[str, float | None]]]] = field(default_factory=dict)


def held_out_part(plan: Plan) -> HeldOut:
    """The runs' validation images (every image with folds, each with its fold), read with the plan's options.

    Raises:
        ValueError: no validation image (a dataset too small to hold any back), or an image without a mask.
    """
    from unetkit.data.dataset import load_samples
    from unetkit.data.discovery import discover
    from unetkit.runtime.run import run_split

    samples = load_samples(discover(plan.data).samples, plan.data)
    keys, groups = [s.key for s in samples], [s.group for s in samples]
    cfg = plan.train
    fold_of: dict[str, int] = {}
    for fold in range(max(cfg.folds, 1)):
        split = run_split(plan, keys, groups, fold=fold, labelled=False)
        fold_of.update({k: fold for k in split.val})
    chosen = [s for s in samples if s.key in fold_of]
    if not chosen:
        raise ValueError(f"{plan.data.root}: no image is held out for validation (train.val_fraction "
                         f"{cfg.val_fraction}); add images or use --folds")  # fmt: skip
    for s in chosen:
        if s.mask is None or s.mask.ndim != plan.data.spatial_dims:
            raise ValueError(f"{s.key}: compare needs a class-index mask for every held-out image")
    what = (f"every image, out of fold ({cfg.folds}-fold cross-validation, seed {cfg.seed})" if cfg.folds else
            f"the runs' validation split: {len(chosen)} of {len(samples)} images (val_fraction {cfg.val_fraction}, "
            f"seed {cfg.seed}, split by group)")  # fmt: skip
    return HeldOut(samples=chosen, fold_of=[fold_of[s.key] for s in chosen], description=what)


def score_variants(plans: Sequence[Plan], runs: dict[str, Path], options: CompareOptions) -> Scores:
    """Score every variant at every TTA level of ``options`` on the held-out part of the first plan."""
    held = held_out_part(plans[0])
    scores = Scores(keys=[s.key for s in held.samples], held_out=held.description)
    for plan in plans:
        name, run = plan.model.name, runs[plan.model.name]
        key = scoring_key(run, scores.keys, options)
        cached = _cached_rows(run, key)
        if cached is not None:
            print(f"{name}: scores of {len(held.samples)} held-out image(s) reused from {run / SCORES_FILE}",
                  flush=True)  # fmt: skip
            scores.rows[name] = cached
            continue
        print(f"{name}: scoring {len(held.samples)} held-out image(s) at TTA {', '.join(options.tta)}", flush=True)
        scores.rows[name] = _score_variant(plan, run, held, options)
        if key is not None:
            write_json_atomic(run / SCORES_FILE, {"key": key, "rows": scores.rows[name]})
    return scores


def scoring_key(run: Path, images: Sequence[str], options: CompareOptions) -> dict[str, Any] | None:
    """What a variant's scores depend on: its finished training (the run's marker), the held-out images, the TTA
    levels, shifts, tolerance and device. None when the run has no readable marker (nothing to key on)."""
    trained = read_done_marker(run)
    if trained is None:
        return None
    return {"trained": trained, "images": list(images), "tta": list(options.tta), "shifts": list(options.shifts),
            "tolerance": options.tolerance, "device": options.device}  # fmt: skip


def read_done_marker(run: Path) -> dict[str, Any] | None:
    """The run's :data:`~unetkit.compare.options.DONE_MARKER` (its plan and training summary); None when the
    run has none or it is damaged (the run is then trained again)."""
    from unetkit.untrusted import UntrustedFileError, load_json_limited

    try:
        done = load_json_limited(run / DONE_MARKER, what="compare run marker", max_bytes=1 << 20)
    except (UntrustedFileError, OSError, ValueError):
        return None
    return done if isinstance(done, dict) else None


def _cached_rows(run: Path, key: dict[str, Any] | None) -> dict[str, list[dict[str, Any]]] | None:
    from unetkit.untrusted import UntrustedFileError, load_json_limited

    if key is None or not (run / SCORES_FILE).is_file():
        return None
    try:
        stored = load_json_limited(run / SCORES_FILE, what="compare scores", max_bytes=256 << 20)
    except (UntrustedFileError, OSError, ValueError):
        return None  # damaged: score again
    if not isinstance(stored, dict) or stored.get("key") != key or not isinstance(stored.get("rows"), dict):
        return None
    rows = stored["rows"]
    complete = list(rows) == list(key["tta"]) and all(
        isinstance(r, list) and len(r) == len(key["images"]) for r in rows.values())  # fmt: skip
    return rows if complete else None


def _run_dirs(run: Path, folds: int) -> list[Path]:
    from unetkit.run_layout import fold_dir

    return [fold_dir(run, i) for i in range(folds)] if folds else [run]


def _score_variant(plan: Plan, run: Path, held: HeldOut, options: CompareOptions) -> dict[str, list[dict[str, Any]]]:
    from unetkit.infer.predictor import Predictor

    dirs = _run_dirs(run, plan.train.folds)
    plain = [Predictor.from_run(d, tta="none", device=options.device) for d in dirs]
    rows: dict[str, list[dict[str, Any]]] = {level: [] for level in options.tta}
    for level in options.tta:
        predictors = plain if level == "none" else [
            Predictor.from_run(d, tta=level, device=options.device) for d in dirs]  # fmt: skip
        for sample, fold in zip(held.samples, held.fold_of, strict=True):
            rows[level].append(score_image(sample, predictors[fold], plain[fold], plan=plan, level=level,
                                           options=options))  # fmt: skip
    if plan.train.folds and "none" in rows:
        for row, sample in zip(rows["none"], held.samples, strict=True):
            row["fold_agreement"] = fold_agreement(sample, plain, plan)
    return rows


def score_image(sample: LoadedSample, predictor: Predictor, plain: Predictor, *, plan: Plan, level: str,
                options: CompareOptions) -> dict[str, Any]:  # fmt: skip
    """Every metric of one image at one TTA level (``predictor`` applies it, ``plain`` predicts single views)."""
    from unetkit.infer.scoring import METRICS, SURFACE_METRICS, score_labels

    volumes = plan.data.spatial_dims == 3
    spacing = sample.meta.get("spacing") if volumes else None
    classes = label_classes(plan)
    first = 1 if plan.data.background else 0
    started = time.perf_counter()
    labels = predictor(sample.image, spacing=sample.meta.get("spacing")).labels
    seconds = time.perf_counter() - started
    if sample.mask is None:
        raise ValueError(f"{sample.key}: no mask to score the prediction against")
    row: dict[str, Any] = score_labels(labels, sample.mask, plan, METRICS + SURFACE_METRICS, spacing=spacing)
    row["boundary_f1"] = boundary_f1_labels(labels, sample.mask, num_classes=classes, first=first,
                                            tolerance=options.tolerance, ignore_index=plan.data.ignore_index,
                                            spacing=spacing)  # fmt: skip
    row["view_agreement"] = None if level == "none" else view_agreement(
        tta_view_labels(plain, sample, level), num_classes=classes, first=first)  # fmt: skip

    def predict(image: np.ndarray) -> np.ndarray:
        return predictor(image, spacing=sample.meta.get("spacing")).labels

    size = min(sample.image.shape[1:])
    per_shift = {k: shift_consistency(predict, sample.image, shift=(k,) * plan.data.spatial_dims,
                                      num_classes=classes, first=first)
                 for k in options.shifts if k < size}  # fmt: skip
    row["shift_consistency"] = float(np.mean(list(per_shift.values()))) if per_shift else None
    row.update({f"shift_consistency_{k}": v for k, v in per_shift.items()})
    row["seconds_per_image"] = seconds
    return row


def tta_view_labels(plain: Predictor, sample: LoadedSample, level: str) -> list[np.ndarray]:
    """The label map of each view of ``level``, predicted without TTA and moved back onto the image's grid."""
    import torch

    from unetkit.infer.tta import tta_views

    out = []
    for view in tta_views(level, plain.spatial_dims):
        image = view.apply(torch.from_numpy(np.ascontiguousarray(sample.image))[None])[0].numpy()
        labels = plain(np.ascontiguousarray(image), spacing=sample.meta.get("spacing")).labels
        out.append(view.invert(torch.from_numpy(labels)[None, None])[0, 0].numpy())
    return out


def fold_agreement(sample: LoadedSample, predictors: Sequence[Predictor], plan: Plan) -> float:
    """Mean pairwise Dice of the fold models' label maps for one image (all but one fold trained on it)."""
    classes = label_classes(plan)
    first = 1 if plan.data.background else 0
    maps = [p(sample.image, spacing=sample.meta.get("spacing")).labels for p in predictors]
    return view_agreement(maps, num_classes=classes, first=first)


__all__ = ["HeldOut", "Scores", "fold_agreement", "held_out_part", "score_image", "score_variants",
           "tta_view_labels"]  # fmt: skip
