"""An exponential moving average of a model's weights, shared by segmentation and diffusion training."""

from __future__ import annotations

import torch


def ema_decay_at(step: int, *, decay: float) -> float:
    """Decay of the weights' moving average after ``step`` (1-based) updates: ``min(decay, (1 + step) / (10 + step))``.

    A fixed decay of 0.999 keeps 0.999**500 = 61 % of the random initial weights after a 500-step CPU run;
    the warm-up lets early averages follow the model and reaches ``decay`` only after ~``10 / (1 - decay)`` steps.

    Example:
        >>> ema_decay_at(1, decay=0.999)
        0.18181818181818182
        >>> ema_decay_at(100000, decay=0.999)
        0.999
    """
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
    return min(decay, (1.0 + step) / (10.0 + step))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, *, decay: float) -> None:
    """``ema = decay * ema + (1 - decay) * model`` for every floating-point tensor of the state; the others
    (BatchNorm's step counters) are copied."""
    for e, p in zip(ema.state_dict().values(), model.state_dict().values(), strict=True):
        if e.dtype.is_floating_point:
            e.mul_(decay).add_(p.detach(), alpha=1 - decay)
        else:
            e.copy_(p)
