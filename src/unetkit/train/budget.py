"""Turning a wall-clock budget into a step count, as pure functions of measured times.

A run with ``train.time_budget_s`` trains a fixed number of steps, so that the learning-rate schedule
can decay to zero exactly at the end. That number is first estimated after a few steps and then
re-estimated after each evaluation from two measured figures:

* the pace of training steps alone (evaluation and checkpoint time excluded), measured from step 2 on,
  since the first steps pay one-off costs (allocator, kernel selection, worker start-up);
* the mean time of one evaluation (validation + checkpoints), which is large when the validation
  set is (80 magnetic-tile images take longer than 20 training steps on a CPU).

Re-estimating also corrects a pace measured too early: with data-loading workers, the first steps
consume batches prefetched while the model was built, and look faster than the run will be.
"""

from __future__ import annotations

import math

# Before the first evaluation its cost is unknown: keep this share of the remaining time for the
# (about eight) evaluations.
EVAL_RESERVE = 0.05
# Evaluations per run when ``train.val_every`` is 0.
EVALUATIONS = 8


def first_estimate(*, budget_s: float, elapsed_s: float, step: int, step_s: float) -> int:
    """Total steps after the calibration steps: the remaining time, less a reserve for evaluations,
    at ``step_s`` seconds per training step. Always at least ``step + 1``."""
    _check(budget_s=budget_s, step_s=step_s)
    remaining = max(budget_s - elapsed_s, 0.0) * (1.0 - EVAL_RESERVE)
    return max(step + 1, step + int(remaining / max(step_s, 1e-9)))


def re_estimate(
    *, budget_s: float, elapsed_s: float, step: int, step_s: float, eval_s: float, val_every: int
) -> int:
    """Total steps after an evaluation at ``step``: the remaining time spent on training steps
    (``step_s`` each) and on the evaluations due every ``val_every`` steps (``eval_s`` each), counting
    the final one. Always at least ``step + 1``.

    Example:
        >>> # 100 s left, 1 s per step, a 10 s evaluation every 10 steps (+ the final one): 45 steps
        >>> re_estimate(budget_s=200, elapsed_s=100, step=50, step_s=1.0, eval_s=10.0, val_every=10)
        95
    """
    _check(budget_s=budget_s, step_s=step_s)
    if val_every < 1:
        raise ValueError(f"val_every must be >= 1, got {val_every}")
    remaining = max(budget_s - elapsed_s, 0.0) - eval_s  # the final evaluation always runs
    per_step = step_s + eval_s / val_every
    return max(step + 1, step + int(math.floor(max(remaining, 0.0) / max(per_step, 1e-9))))


def default_val_every(total_steps: int) -> int:
    """About :data:`EVALUATIONS` evaluations over ``total_steps``."""
    return max(total_steps // EVALUATIONS, 1)


def _check(*, budget_s: float, step_s: float) -> None:
    if not budget_s > 0:
        raise ValueError(f"time budget must be positive, got {budget_s}")
    if not step_s >= 0:
        raise ValueError(f"seconds per step must be >= 0, got {step_s}")
