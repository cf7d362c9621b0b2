"""Where things live in a run directory, shared by training (which writes it) and inference (which reads it).

A run directory (``unetkit train --out RUN``) holds ``plan.yaml``, ``best/`` and ``last/`` checkpoints;
a cross-validation folder (``--fold all``) holds one run per fold, ``fold_<i>/``, and ``cv.json``.
"""

from __future__ import annotations

from pathlib import Path

PLAN_NAME = "plan.yaml"
CV_SUMMARY = "cv.json"
CHECKPOINTS = ("best", "last")


def is_run_dir(path: str | Path) -> bool:
    """A folder written by one training run (it has a ``plan.yaml``)."""
    return (Path(path) / PLAN_NAME).is_file()


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


__all__ = ["CHECKPOINTS", "CV_SUMMARY", "PLAN_NAME", "fold_dir", "fold_runs", "is_cv_parent", "is_run_dir"]
