"""Where things live in a run directory, shared by training (which writes it) and inference (which reads it).

A run directory (``unetkit train --out RUN``) holds ``plan.yaml``, ``best/`` and ``last/`` checkpoints;
a cross-validation folder (``--fold all``) holds one run per fold, ``fold_<i>/``, and ``cv.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from unetkit.config import Plan

PLAN_NAME = "plan.yaml"
CV_SUMMARY = "cv.json"
CHECKPOINTS = ("best", "last")
MODEL_CONFIG = "config.json"  # a checkpoint folder's model config (unetkit.models.base.CONFIG_NAME)
# The key of a checkpoint's config.json that holds its run's plan: what prediction needs (normalisation,
# classes, tiling, TTA, the alignment shift), so that a copied ``best/`` folder predicts without its run.
PLAN_KEY = "plan"


def is_run_dir(path: str | Path) -> bool:
    """A folder written by one training run (it has a ``plan.yaml``)."""
    return (Path(path) / PLAN_NAME).is_file()


def is_model_dir(path: str | Path) -> bool:
    """A checkpoint folder on its own (``config.json`` + weights, no ``plan.yaml``), e.g. a copied ``best/``."""
    path = Path(path)
    return not is_run_dir(path) and (path / MODEL_CONFIG).is_file()


def weights_dir(run: str | Path, checkpoint: str) -> Path:
    """Where the weights of ``run`` are: ``RUN/<checkpoint>``, or the folder itself for a model folder."""
    run = Path(run)
    return run if is_model_dir(run) else run / checkpoint


def load_run_plan(run: str | Path) -> Plan:
    """The plan of a run directory (``plan.yaml``) or of a model folder (the plan its ``config.json`` carries).

    Raises:
        FileNotFoundError: neither a ``plan.yaml`` nor a model folder with a plan (checkpoints written before
            plans were carried, or by ``save_pretrained`` alone).
        ValueError: a malformed plan.
    """
    from unetkit.config import Plan

    run = Path(run)
    if not is_model_dir(run):
        return Plan.load(run / PLAN_NAME)
    config = run / MODEL_CONFIG
    try:
        raw = json.loads(config.read_text()).get(PLAN_KEY)
    except (OSError, ValueError, AttributeError) as err:
        raise ValueError(f"{config}: not a unetkit model config ({err})") from err
    if raw is None:
        raise FileNotFoundError(
            f"{config}: this model folder carries no plan (it was saved before checkpoints carried one, or without "
            f"a training run) and {run / PLAN_NAME} does not exist; predict with its run folder instead"
        )
    try:
        return Plan.from_dict(raw)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{config}: its plan is invalid: {err}") from err


def fold_dir(run_dir: str | Path, fold: int) -> Path:
    """The run directory of fold ``fold`` inside the cross-validation folder ``run_dir``."""
    return Path(run_dir) / f"fold_{fold}"


def fold_runs(path: str | Path) -> list[Path]:
    """The ``fold_<i>`` run directories (with a ``plan.yaml``) inside ``path``, in fold order."""
    path = Path(path)
    if not path.is_dir():
        return []
    found = [p for p in path.glob("fold_*") if p.name[5:].isdigit() and is_run_dir(p)]
    return sorted(found, key=lambda p: int(p.name[5:]))


def is_cv_parent(path: str | Path) -> bool:
    """A cross-validation folder (``cv.json``, or ``fold_*`` runs and no ``plan.yaml`` of its own)."""
    path = Path(path)
    if (path / CV_SUMMARY).is_file():
        return True
    return not is_run_dir(path) and bool(fold_runs(path))


__all__ = [
    "CHECKPOINTS", "CV_SUMMARY", "MODEL_CONFIG", "PLAN_KEY", "PLAN_NAME", "fold_dir", "fold_runs", "is_cv_parent",
    "is_model_dir", "is_run_dir", "load_run_plan", "weights_dir",
]  # fmt: skip
