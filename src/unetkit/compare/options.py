"""What a study compares and how (:class:`CompareOptions`), and the limits checked before any training."""

from __future__ import annotations

from dataclasses import dataclass

# Below this the trainer's budget has no room to learn: the first 8 steps calibrate the step time, and the
# validations, checkpoints and end-of-run alignment take seconds of their own on a CPU.
MIN_BUDGET_S = 10.0
# Below this many optimiser steps a variant has not left its warm-up (a tenth of the run) long enough to learn.
MIN_STEPS = 20
DEFAULT_SHIFTS = (1, 4, 16)
# In each variant's run folder: the finished training (its plan), and the finished scores of that training.
DONE_MARKER = "compare_done.json"
SCORES_FILE = "compare_scores.json"


@dataclass(frozen=True)
class CompareOptions:
    """What to compare and how.

    Attributes:
        models: registered model names; the first is the reference of the paired differences.
        tta: TTA levels (see :data:`unetkit.choices.TTA_LEVELS`); differences are taken against the first.
        time_budget_s: training time of each variant (of each fold with ``folds``); unused with ``steps``.
        steps: when > 0, every variant trains exactly this many optimiser steps instead of ``time_budget_s``
            (a comparison that does not depend on the machine's speed or load; slower variants take longer).
        folds: 0 = one run per variant on the plan's validation split; K >= 2 = K-fold cross-validation.
        encoder: replaces the planner's encoder for every variant (``plain`` or a timm name); None = planner's.
        overrides: ``section.field=value`` plan overrides applied to every variant.
        shifts: pixel shifts of the shift-consistency metric (each along every spatial axis at once).
        tolerance: boundary F1 tolerance, in pixels (in the spacing's units, mm, for volumes).
        device: torch device for training and inference.
    """

    models: tuple[str, ...]
    tta: tuple[str, ...] = ("none", "flips", "d4")
    time_budget_s: float = 600.0
    steps: int = 0
    folds: int = 0
    encoder: str | None = None
    overrides: tuple[str, ...] = ()
    shifts: tuple[int, ...] = DEFAULT_SHIFTS
    tolerance: float = 2.0
    device: str = "cpu"


__all__ = ["DEFAULT_SHIFTS", "DONE_MARKER", "MIN_BUDGET_S", "MIN_STEPS", "SCORES_FILE", "CompareOptions"]
