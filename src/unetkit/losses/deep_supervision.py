"""Deep supervision: one loss per output of a deep-supervised model, targets resized to each output."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn as nn
import torch.nn.functional as F

from unetkit.losses._targets import Tensor


# --------------------------------------------------------------------------------- deep supervision
def deep_supervision_weights(levels: int) -> list[float]:
    """``[1, 1/2, 1/4, ...]`` normalised to sum to 1 (full resolution first)."""
    if levels < 1:
        raise ValueError(f"need at least one output level, got {levels}")
    raw = [0.5**i for i in range(levels)]
    return [w / sum(raw) for w in raw]


def resize_target(target: Tensor, size: Sequence[int]) -> Tensor:
    """Nearest-neighbour resize of a target to spatial ``size``; keeps dtype and ``ignore_index`` values.

    Args:
        target: ``(N, *spatial)`` class indices (when ``target.ndim == len(size) + 1``) or
            ``(N, C, *spatial)`` channel targets.
        size: the wanted spatial shape.
    """
    size = tuple(int(s) for s in size)
    has_channels = target.ndim == len(size) + 2
    if not has_channels and target.ndim != len(size) + 1:
        raise ValueError(
            f"target shape {tuple(target.shape)} does not fit a {len(size)}D output of size {size}"
        )
    spatial = tuple(target.shape[2:] if has_channels else target.shape[1:])
    if spatial == size:
        return target
    # float32 holds every label value < 2**24 exactly, so the round trip keeps class indices intact.
    x = target.float() if has_channels else target.unsqueeze(1).float()
    x = F.interpolate(x, size=size, mode="nearest")
    return (x if has_channels else x[:, 0]).to(target.dtype)


class DeepSupervisionLoss(nn.Module):
    """Applies ``loss`` to each output of a deep-supervised model and returns the weighted sum.

    Args:
        loss: any ``loss(logits, target)`` module.
        weights: one per output (full resolution first); default halving per level, normalised
            (:func:`deep_supervision_weights`). Given weights are normalised to sum to 1 too.

    ``forward(outputs, target)``: ``outputs`` is a list/tuple of logits, or a single tensor (then it is just
    ``loss(outputs, target)``). The target is resized by nearest neighbour to each output's spatial size.
    """

    def __init__(self, loss: nn.Module, *, weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.loss = loss
        if weights is not None and (not weights or any(w < 0 for w in weights) or sum(weights) <= 0):
            raise ValueError(
                f"deep supervision weights must be non-negative with a positive sum, got {weights}"
            )
        self.weights = None if weights is None else [float(w) / sum(weights) for w in weights]

    def forward(self, outputs: Tensor | Sequence[Tensor], target: Tensor) -> Tensor:
        if isinstance(outputs, Tensor):
            return self.loss(outputs, target)
        weights = self.weights or deep_supervision_weights(len(outputs))
        if len(weights) != len(outputs):
            raise ValueError(f"got {len(outputs)} outputs but {len(weights)} deep supervision weights")
        total = outputs[0].new_zeros(())
        for weight, logits in zip(weights, outputs, strict=True):
            if weight > 0:
                total = total + weight * self.loss(logits, resize_target(target, logits.shape[2:]))
        return total
