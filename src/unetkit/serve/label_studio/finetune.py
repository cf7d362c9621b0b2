"""One fine-tune of the served model on the annotations gathered from Label Studio, run as its own process
(``python -m unetkit.serve.label_studio.finetune JOB.json``) so that serving never waits for it.

The job names the model now served (a run folder), the dataset folder the backend wrote (``images/`` +
``masks/`` holding class indices), the new version's folder and a time budget (or a fixed step count). The
worker trains the served model's plan on that dataset, starting from the served weights, then predicts the
validation images of the training's own split with the served model and with the new one, and writes
``decision.json`` into the new version's folder: both mean Dice scores, and ``swap`` = the new score is not
below the old one.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from unetkit.config import Plan

DECISION = "decision.json"


@dataclass(frozen=True)
class FineTuneJob:
    """What one fine-tune does (written as ``job.json`` into the new version's folder).

    Attributes:
        current: the run folder of the model served now (its ``plan.yaml`` and ``best/``).
        data: the dataset folder (``images/``, ``masks/``).
        out: the new version's run folder.
        classes: class names, background first (the run's).
        budget_s: training time in seconds.
        device: torch device.
        steps: train exactly this many optimiser steps instead of ``budget_s`` (a fine-tune that does not depend
            on the machine's speed); None: the time budget.
    """

    current: str
    data: str
    out: str
    classes: tuple[str, ...]
    budget_s: float
    device: str = "cpu"
    steps: int | None = None


def write_job(job: FineTuneJob, path: Path) -> None:
    """Save ``job`` as JSON (atomically)."""
    from unetkit._io import write_json_atomic

    write_json_atomic(path, asdict(job))


def read_job(path: Path) -> FineTuneJob:
    """The job saved by :func:`write_job`.

    Raises:
        UntrustedFileError: unreadable, or not a job.
    """
    from unetkit.untrusted import UntrustedFileError, load_json_limited

    raw = load_json_limited(path, what="fine-tune job", max_bytes=1 << 20)
    try:
        return FineTuneJob(**{**raw, "classes": tuple(raw["classes"])})
    except (TypeError, KeyError) as err:
        raise UntrustedFileError(f"{path}: not a fine-tune job ({err})") from err


def fine_tune_plan(job: FineTuneJob) -> Plan:
    """The served run's plan, reading the job's dataset (class-index masks) within the job's time budget (or
    for exactly its ``steps``)."""
    from unetkit.config import Plan

    plan = Plan.load(Path(job.current) / "plan.yaml")
    plan = copy.deepcopy(plan)
    plan.data = replace(plan.data, root=str(job.data), image_dir="images", mask_dir="masks", roi_dir="",
                        mask_threshold=None, value_map=None, colour_table=None, ignore_colours=[],
                        classes=list(job.classes), vector_labels="", class_field="")  # fmt: skip
    plan.train = replace(plan.train, time_budget_s=None if job.steps else float(job.budget_s),
                         steps=int(job.steps) if job.steps else plan.train.steps, align=False, folds=0, fold=0,
                         labels=0, labels_keys=[], unlabelled=[], unlabelled_skipped=[],
                         warmup_steps=min(plan.train.warmup_steps, 5))  # fmt: skip
    return plan


def validation_dice(run: Path, plan: Plan, *, device: str) -> tuple[float, list[str]]:
    """Mean foreground Dice of the model in ``run`` on the validation side of ``plan``'s split (as training
    split it); ``(nan, [])`` without a validation side."""
    from unetkit.data.discovery import discover
    from unetkit.data.io import read_image
    from unetkit.data.splits import LabelledSubset, training_split
    from unetkit.infer.predictor import Predictor
    from unetkit.infer.scoring import score_labels

    cfg = plan.train
    samples = discover(plan.data).samples
    split = training_split([s.key for s in samples], [s.group for s in samples], val_fraction=cfg.val_fraction,
                           seed=cfg.seed, labelled=LabelledSubset.of(cfg))  # fmt: skip
    val_keys = list(split[1])
    if not val_keys:
        return float("nan"), []
    predictor = Predictor.from_run(run, device=device, fast=False)
    by_key = {s.key: s for s in samples}
    scores = []
    for key in val_keys:
        sample = by_key[key]
        image = read_image(sample.image_paths[0]).array.astype(np.float32)
        target = np.asarray(read_image(sample.mask_paths[0]).array[0]).astype(np.int64)
        labels = predictor(image).labels
        scores.append(score_labels(labels, target, plan, ["dice"])["dice"])
    return float(np.mean(scores)), val_keys


def run_job(job: FineTuneJob) -> dict[str, object]:
    """Train, score both models, write ``decision.json``; returns the decision."""
    from unetkit._io import write_json_atomic
    from unetkit.train.loop import train

    plan = fine_tune_plan(job)
    started = time.perf_counter()
    out = Path(job.out)
    # Trained beside the version's folder, then moved in: training replaces its folder, and this one already
    # holds job.json and the finetune.log this process writes to.
    scratch = out.parent / f".{out.name}-training"
    result = train(plan, scratch, overwrite=True, device=job.device, init_from=Path(job.current) / "best")
    for entry in sorted(scratch.iterdir()):
        entry.replace(out / entry.name)
    scratch.rmdir()
    old, keys = validation_dice(Path(job.current), plan, device=job.device)
    new, _ = validation_dice(Path(job.out), plan, device=job.device)
    swap = bool(keys) and new >= old
    decision = {"old_dice": old, "new_dice": new, "validation": keys, "swap": swap, "steps": result.steps,
                "seconds": round(time.perf_counter() - started, 1),
                "reason": ("validation Dice did not drop" if swap else
                           "no validation image" if not keys else "validation Dice dropped")}  # fmt: skip
    write_json_atomic(Path(job.out) / DECISION, decision)
    return decision


def main(argv: list[str] | None = None) -> int:
    """``python -m unetkit.serve.label_studio.finetune JOB.json``: 0 when a decision was written."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m unetkit.serve.label_studio.finetune JOB.json", file=sys.stderr)
        return 2
    try:
        decision = run_job(read_job(Path(args[0])))
    except (ValueError, OSError) as err:
        print(f"fine-tune failed: {err}", file=sys.stderr)
        return 1
    print(json.dumps(decision), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
