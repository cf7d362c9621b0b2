"""k-fold cross-validation: every fold trained one after another into ``RUN/fold_<i>`` (each a normal run
directory), with ``RUN/cv.json`` summarising each fold's best validation Dice and their mean.

The plan's time budget (or step count) applies to each fold: ``--fold all`` with a 10-minute budget and 5
folds takes about 50 minutes.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

from unetkit._io import write_text_atomic
from unetkit.config import Plan
from unetkit.run_layout import CV_SUMMARY, fold_dir


@dataclass
class CrossValidationResult:
    run_dir: Path
    fold_dice: list[float]  # best validation Dice of fold 0..k-1
    mean_dice: float


def train_folds(
    plan: Plan, run_dir: str | Path, *, resume: bool = False, overwrite: bool = False, device: str = "cpu"
) -> CrossValidationResult:
    """Train every fold of ``plan.train.folds`` into ``run_dir/fold_<i>`` and write ``run_dir/cv.json``.

    ``cv.json`` is rewritten after each fold (``"complete": false`` until the last), so a killed
    cross-validation shows what it finished. With ``resume``, folds with a saved state continue (a finished
    fold only re-reads its data) and the others start afresh.

    Raises:
        ValueError: ``plan.train.folds`` below 2.
        FileExistsError: ``run_dir`` holds files and neither ``resume`` nor ``overwrite`` is set.
    """
    from unetkit.train import distributed
    from unetkit.train.loop import train
    from unetkit.train.setup import prepare_run_dir

    k = plan.train.folds
    if k < 2:
        raise ValueError(f"cross-validation needs train.folds >= 2, got {k}")
    ctx = distributed.context_from_env()  # under torchrun, rank 0 alone writes the folder and its summary
    run_dir = Path(run_dir)
    if ctx.is_main:
        prepare_run_dir(run_dir, resume=resume, overwrite=overwrite, marker=None)
    fold_dice: list[float] = []
    for fold in range(k):
        fold_plan = dataclasses.replace(plan, train=dataclasses.replace(plan.train, fold=fold))
        target = fold_dir(run_dir, fold)
        continues = resume and (target / "state.json").is_file()
        if continues:
            fold_plan = Plan.load(target / "plan.yaml")  # the fold's own plan, as a single-run resume does
        if ctx.is_main:
            print(f"fold {fold + 1}/{k} -> {target}", flush=True)
        result = train(fold_plan, target, resume=continues, overwrite=not continues, device=device)
        fold_dice.append(float(result.best_score))
        if ctx.is_main:
            _write_summary(run_dir, k=k, seed=plan.train.seed, fold_dice=fold_dice)
    return CrossValidationResult(run_dir=run_dir, fold_dice=fold_dice, mean_dice=_mean(fold_dice))


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def _write_summary(run_dir: Path, *, k: int, seed: int, fold_dice: list[float]) -> None:
    summary = {
        "folds": k,
        "seed": seed,
        "complete": len(fold_dice) == k,
        "fold_dice": {f"fold_{i}": _json_number(d) for i, d in enumerate(fold_dice)},
        "mean_dice": _json_number(_mean(fold_dice)),
    }
    path = run_dir / CV_SUMMARY
    write_text_atomic(path, json.dumps(summary, indent=2))


def _json_number(value: float) -> float | None:
    return value if math.isfinite(value) else None  # JSON has no NaN
