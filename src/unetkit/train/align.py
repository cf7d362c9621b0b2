"""End-of-training alignment: estimate ``infer.shift`` on the validation images (see ``unetkit.runtime.alignment``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from unetkit.config import Plan
from unetkit.runtime.examples import Example
from unetkit.runtime.run import label_classes

# Validation probabilities kept in memory for the search, in values (K * pixels): 256 MB of float32.
MAX_VALUES = 64 * 2**20


def align_predictions(
    run_dir: Path,
    val_set: list[Example],
    plan: Plan,
    *,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    layout: torch.memory_format | None = None,
) -> tuple[list[float], float, float] | None:
    """Find the shift of the best model's validation probabilities that fits their labels best and write it
    (``[]`` when none wins clearly) to ``infer.shift`` in ``run_dir/plan.yaml``; ``plan`` itself is not changed.

    Validation images are used in order until :data:`MAX_VALUES` probability values are held.

    Returns:
        ``(shift, validation score without it, with it)`` (``shift`` is ``[]`` when none wins), or None when
        alignment is off, there is no validation set or no best checkpoint.
    """
    if not plan.train.align or not val_set or not (run_dir / "best").is_dir():
        return None
    from unetkit.runtime.alignment import estimate_shift
    from unetkit.runtime.postprocess import probabilities_to_labels
    from unetkit.train.evaluation import foreground_dice, load_for_evaluation, predict_probabilities

    model = load_for_evaluation(run_dir / "best", device=device, layout=layout)
    classes = label_classes(plan)
    samples: list[tuple[np.ndarray, np.ndarray]] = []
    held = 0
    for example in val_set:
        probs = predict_probabilities(
            model, example.image, tile_size=tuple(plan.train.patch_size), amp_dtype=amp_dtype, memory_format=layout
        )
        if samples and held + probs.size > MAX_VALUES:
            break
        samples.append((probs, example.mask))
        held += probs.size

    def score(probs: np.ndarray, target: np.ndarray) -> float:
        labels = probabilities_to_labels(probs, threshold=plan.infer.threshold)
        return foreground_dice(
            labels, target, num_classes=classes, ignore_index=plan.data.ignore_index, background=plan.data.background
        )

    shift, before, after = estimate_shift(samples, score)
    # The run's own plan file is rewritten, never the caller's Plan object: cross-validation folds share
    # one InferConfig, and a fold must not inherit another fold's shift.
    saved = Plan.load(run_dir / "plan.yaml")
    if list(saved.infer.shift) != shift:
        saved.infer = dataclasses.replace(saved.infer, shift=shift)
        saved.save(run_dir / "plan.yaml")
        carry_plan(run_dir, saved)
    return shift, before, after


def carry_plan(run_dir: Path, plan: Plan) -> None:
    """Write ``plan`` into the ``config.json`` of each of the run's checkpoints (atomically), as the loop does
    when it saves them."""
    from unetkit._io import write_text_atomic
    from unetkit.run_layout import CHECKPOINTS, MODEL_CONFIG, PLAN_KEY

    for name in CHECKPOINTS:
        path = run_dir / name / MODEL_CONFIG
        if path.is_file():
            config = {**json.loads(path.read_text()), PLAN_KEY: plan.to_dict()}
            write_text_atomic(path, json.dumps(config, indent=2, sort_keys=True))
