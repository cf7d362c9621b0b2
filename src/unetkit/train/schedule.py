"""Learning-rate schedules as pure functions of the step."""

from __future__ import annotations

import math

SCHEDULES = ("cosine", "poly", "constant")


def lr_at(
    step: int, *, base_lr: float, total_steps: int, warmup_steps: int = 0, kind: str = "cosine"
) -> float:
    """Learning rate for ``step`` (0-based): linear warm-up, then cosine / poly (exponent 0.9) decay to 0.

    Example:
        >>> lr_at(0, base_lr=1.0, total_steps=10, warmup_steps=2)
        0.5
        >>> lr_at(6, base_lr=1.0, total_steps=10, warmup_steps=2)  # cosine, half way after warm-up
        0.5
    """
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule {kind!r}; choose one of {', '.join(SCHEDULES)}")
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if kind == "constant":
        return base_lr
    progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
    if kind == "cosine":
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    return base_lr * (1.0 - progress) ** 0.9
