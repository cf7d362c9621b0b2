"""The study: check the request, plan every variant from the same data, train each (or reuse a finished run),
score them on the held-out part and write the report.

Every variant gets the default plan of the data (what ``unetkit train DATA`` would use) with only the model
name changed, the same time budget, the same seed and therefore the same split. The held-out part is the
runs' validation split (``train.val_fraction`` of the groups), or with ``folds`` every image once, scored by
the fold model that did not train on it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unetkit._io import write_json_atomic
from unetkit.compare.options import DEFAULT_SHIFTS, DONE_MARKER, MIN_BUDGET_S, MIN_STEPS, CompareOptions
from unetkit.config import Plan, apply_overrides
from unetkit.runtime.run import encoder_name

if TYPE_CHECKING:
    from unetkit.data.options import DataConfig

def check_request(options: CompareOptions) -> None:
    """Refuse what can be refused without reading the data: names, TTA levels, the budget, the folds.

    Raises:
        ValueError: one line naming the bad value and what is valid.
    """
    from unetkit.choices import TTA_LEVELS
    from unetkit.model_config import MODEL_CONFIGS

    valid = sorted(MODEL_CONFIGS)  # the segmentation models (the diffusion U-Net is not one)
    if not options.models:
        raise ValueError(f"--models: name at least one model ({', '.join(valid)})")
    for name in options.models:
        if name not in valid:
            raise ValueError(f"--models: unknown model {name!r}; choose from {', '.join(valid)}")
    if len(set(options.models)) != len(options.models):
        raise ValueError(f"--models: a model is named twice in {','.join(options.models)}")
    for level in options.tta:
        if level not in TTA_LEVELS:
            raise ValueError(f"--tta: unknown level {level!r}; choose from {', '.join(TTA_LEVELS)}")
    if not options.tta:
        raise ValueError(f"--tta: name at least one level ({', '.join(TTA_LEVELS)})")
    if options.steps and options.steps < MIN_STEPS:
        raise ValueError(f"--steps {options.steps} is too few to train: the warm-up and the first validations "
                         f"take the first steps; use at least {MIN_STEPS}")
    if not options.steps and options.time_budget_s < MIN_BUDGET_S:
        raise ValueError(
            f"--time-budget {options.time_budget_s:g}s is too short to train: below {MIN_BUDGET_S:g}s the budget is "
            "spent calibrating the step time, validating and saving, not learning"
        )
    if options.folds == 1 or options.folds < 0:
        raise ValueError(f"--folds must be 0 (one validation split) or at least 2, got {options.folds}")
    if any(k < 1 for k in options.shifts):
        raise ValueError(f"shifts must be positive pixel counts, got {options.shifts}")


def plan_variants(data: DataConfig, options: CompareOptions) -> list[Plan]:
    """The default plan of ``data`` for each model (same budget, seed and split), checked against the data.

    Raises:
        ValueError: a model or encoder that does not support the data's dimensionality, or a bad override.
    """
    from unetkit.train.plan import plan_from_data

    pretrained = False if options.encoder == "plain" else None
    base = plan_from_data(data, device=options.device, time_budget_s=options.time_budget_s, pretrained=pretrained)
    if options.encoder:
        base.model.kwargs.pop("encoder_weights", None)  # the planner's weights belong to its own encoder
    length = ["train.time_budget_s=null", f"train.steps={options.steps}"] if options.steps else [
        f"train.time_budget_s={options.time_budget_s}"]
    common = [*options.overrides, *length]
    if options.encoder:
        common.append(f"model.kwargs.encoder={options.encoder}")
    if options.folds:
        common.append(f"train.folds={options.folds}")
    plans = [apply_overrides(base, [f"model.name={name}", *common]) for name in options.models]
    for plan in plans:
        check_support(plan)
    return plans


def check_support(plan: Plan) -> None:
    """Refuse a variant the data cannot train: a model without this many spatial dimensions, or a timm
    encoder (2D only) for volumes.

    Raises:
        ValueError: one line naming the model (and encoder) and the data's dimensionality.
    """
    from unetkit.models.factory import supported_spatial_dims

    dims, name = plan.data.spatial_dims, plan.model.name
    supported = supported_spatial_dims(name)
    if dims not in supported:
        forms = " and ".join(f"{d}D" for d in supported)
        raise ValueError(f"model {name} has no {dims}D form (only {forms}); the data is {dims}D")
    encoder = encoder_name(plan)
    if dims == 3 and encoder != "plain":
        raise ValueError(f"model {name} with encoder {encoder}: timm encoders are 2D only and the data is 3D; "
                         "use --encoder plain")  # fmt: skip


def train_variants(plans: Sequence[Plan], out: Path, *, device: str) -> dict[str, Path]:
    """Train each plan into ``out/runs/<model>``; a run whose folder holds :data:`DONE_MARKER` for the same
    plan is reused (a killed study resumes where it stopped). Returns model -> run (or CV) folder."""
    from unetkit.train.cv import train_folds
    from unetkit.train.loop import train

    runs: dict[str, Path] = {}
    for plan in plans:
        run_dir = out / "runs" / plan.model.name
        runs[plan.model.name] = run_dir
        if finished_run(run_dir, plan):
            print(f"{plan.model.name}: finished run in {run_dir}, not retrained", flush=True)
            continue
        length = f"{plan.train.time_budget_s:g} s" if plan.train.time_budget_s else f"{plan.train.steps} steps"
        print(f"{plan.model.name}: training for {length} -> {run_dir}", flush=True)
        if plan.train.folds:
            cv = train_folds(plan, run_dir, overwrite=True, device=device)
            summary: dict[str, Any] = {"best_score": cv.mean_dice, "fold_scores": cv.fold_dice}
        else:
            result = train(plan, run_dir, overwrite=True, device=device)
            summary = {"best_score": result.best_score, "steps": result.steps, "seconds": result.seconds}
        write_json_atomic(run_dir / DONE_MARKER, {"plan": plan.to_dict(), **summary})
    return runs


def finished_run(run_dir: Path, plan: Plan) -> bool:
    """Whether ``run_dir`` holds a finished compare run of exactly ``plan``."""
    from unetkit.compare.scoring import read_done_marker

    done = read_done_marker(run_dir)
    same = done is not None and json.dumps(done.get("plan"), sort_keys=True) == json.dumps(
        plan.to_dict(), sort_keys=True)  # fmt: skip
    return bool(same)


def run_study(data: DataConfig, out: str | Path, options: CompareOptions) -> dict[str, Any]:
    """Check, plan, train, score and report; returns the report (also in ``out/report.json``).

    Raises:
        ValueError: a refused request (see :func:`check_request` and :func:`check_support`), before training.
    """
    from unetkit.compare.report import write_report
    from unetkit.compare.scoring import score_variants

    check_request(options)
    plans = plan_variants(data, options)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = train_variants(plans, out, device=options.device)
    scores = score_variants(plans, runs, options)
    return write_report(out, scores, options=dataclasses.asdict(options))


__all__ = ["DEFAULT_SHIFTS", "DONE_MARKER", "MIN_BUDGET_S", "CompareOptions", "check_request", "check_support",
           "finished_run", "plan_variants", "run_study", "train_variants"]  # fmt: skip
