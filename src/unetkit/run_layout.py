"""Where things live in a run directory, shared by training (which writes it) and inference (which reads it).

A run directory (``unetkit train --out RUN``) holds ``plan.yaml``, ``best/`` and ``last/`` checkpoints;
a cross-validation folder (``--fold all``) holds one run per fold, ``fold_<i>/``, and ``cv.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from unetkit.config import Plan

PLAN_NAME = "plan.yaml"
CV_SUMMARY = "cv.json"
# A run trained on a labelled subset (train --labels / --labels-file) lists its training cases here, one key a
# line: the form --labels-file reads, so a labelling loop's next round adds its new labels to this list.
LABELLED_NAME = "labelled.txt"
CHECKPOINTS = ("best", "last")
MODEL_CONFIG = "config.json"  # a checkpoint folder's model config (unetkit.models.base.CONFIG_NAME)
# The key of a checkpoint's config.json that holds its run's plan: what prediction needs (normalisation,
# classes, tiling, TTA, the alignment shift), so that a copied ``best/`` folder predicts without its run.
PLAN_KEY = "plan"
# What a checkpoint's config.json may be (read_model_config): a model's options and its run's plan, a few KiB
# (a plan's `labels_keys` may add many thousand names).
MODEL_CONFIG_LIMITS = {"max_bytes": 16 * 2**20, "max_depth": 20}


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
    raw = read_model_config(config).get(PLAN_KEY)
    if raw is None:
        raise FileNotFoundError(
            f"{config}: this model folder carries no plan (it was saved before checkpoints carried one, or without "
            f"a training run) and {run / PLAN_NAME} does not exist; predict with its run folder instead"
        )
    if not isinstance(raw, dict):
        raise ValueError(f"{config}: its plan is invalid: expected a mapping, got {type(raw).__name__}")
    try:
        return Plan.from_dict(raw)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{config}: its plan is invalid: {err}") from err


def read_model_config(path: str | Path) -> dict[str, Any]:
    """A checkpoint's ``config.json`` as a mapping, read within :data:`MODEL_CONFIG_LIMITS`.

    Raises:
        ValueError: too large, not UTF-8 JSON, nested too deeply, or not a JSON object; the message names the file.
    """
    from unetkit.untrusted import load_json_limited

    limits = MODEL_CONFIG_LIMITS
    raw = load_json_limited(path, what="model config", max_bytes=limits["max_bytes"], max_depth=limits["max_depth"])
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: not a unetkit model config (a JSON {type(raw).__name__}, expected an object)")
    return raw


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
    "CHECKPOINTS", "CV_SUMMARY", "MODEL_CONFIG", "MODEL_CONFIG_LIMITS", "PLAN_KEY", "PLAN_NAME", "fold_dir",
    "fold_runs", "is_cv_parent", "is_model_dir", "is_run_dir", "load_run_plan", "read_model_config", "weights_dir",
]  # fmt: skip
