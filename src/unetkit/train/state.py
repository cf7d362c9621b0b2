"""The training loop's state: what it counts, what the budget is measured from, and what survives a kill.

:class:`LoopState` is saved as JSON beside the tensors (``state.json``'s ``scalars``); every field has a
default, so a state written by an older unetkit, which lacked some of them, still resumes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from unetkit.train.budget import re_estimate


@dataclass
class LoopState:
    """Where the loop is.

    Attributes:
        step: optimiser steps done.
        total_steps: planned steps (0 until a time budget has been calibrated into a count).
        best: best validation score so far (-1 before the first evaluation).
        elapsed: wall seconds of the run so far, over all its sessions.
        precision: what the steps compute in (``PrecisionChoice.name``); "" before the first session.
        paced_from: ``[step, training seconds]`` the step pace is measured from (step 2; None before it).
        val_every: steps between evaluations (0 until the total is known).
        stale: evaluations in a row without improvement (for early stopping).
        eval_s: seconds spent in evaluations and checkpoints so far.
        evals: evaluations so far.
    """

    step: int = 0
    total_steps: int = 0
    best: float = -1.0
    elapsed: float = 0.0
    precision: str = ""
    paced_from: list[float] | None = None
    val_every: int = 0
    stale: int = 0
    eval_s: float = 0.0
    evals: int = 0

    @classmethod
    def from_scalars(cls, scalars: dict[str, Any]) -> LoopState:
        """The state saved as ``scalars``; keys this version does not know are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in scalars.items() if k in known})

    def to_scalars(self) -> dict[str, Any]:
        return asdict(self)

    def finished(self) -> bool:
        return bool(self.total_steps) and self.step >= self.total_steps

    def training_seconds(self) -> float:
        """Wall time spent on training steps so far (evaluations and checkpoints excluded)."""
        return float(self.elapsed) - float(self.eval_s)

    def step_seconds(self) -> float:
        """Seconds per training step since ``paced_from`` (step 2; a run resumed before it: its start)."""
        start_step, start_s = self.paced_from or (0, 0.0)
        return (self.training_seconds() - start_s) / max(self.step - int(start_step), 1)

    def count_evaluation(self, *, seconds: float, now: float) -> None:
        """Count one evaluation (validation + checkpoints) of ``seconds``; the run's clock is now ``now``."""
        self.eval_s += seconds
        self.evals += 1
        self.elapsed = now

    def re_estimate(self, *, budget_s: float) -> int:
        """The step count that fits ``budget_s`` at the pace measured so far (see :mod:`unetkit.train.budget`)."""
        return re_estimate(
            budget_s=budget_s,
            elapsed_s=self.elapsed,
            step=self.step,
            step_s=self.step_seconds(),
            eval_s=self.eval_s / max(self.evals, 1),
            val_every=self.val_every,
        )
