"""Module forms of the loss functions, and their weighted combinations (Dice + CE, Dice + focal)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from unetkit.losses._targets import DEFAULT_SMOOTH, TASKS, Tensor, Weights
from unetkit.losses.functional import ce_loss, dice_loss, focal_loss, focal_tversky_loss, tversky_loss


# ------------------------------------------------------------------------------------------- modules
class _TaskLoss(nn.Module):
    """Stores the task and ignore index shared by every loss module; subclasses call a pure function."""

    def __init__(self, *, task: str, ignore_index: int = 255) -> None:
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
        self.task = task
        self.ignore_index = ignore_index

    def extra_repr(self) -> str:
        return f"task={self.task!r}, ignore_index={self.ignore_index}"


class CELoss(_TaskLoss):
    """Module form of :func:`ce_loss` (cross-entropy or BCE depending on the task / channels)."""

    class_weights: Tensor | None  # a buffer (None: unweighted)

    def __init__(self, *, task: str, ignore_index: int = 255, class_weights: Weights = None) -> None:
        super().__init__(task=task, ignore_index=ignore_index)
        weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", weights)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return ce_loss(
            logits, target, task=self.task, ignore_index=self.ignore_index, class_weights=self.class_weights
        )


class FocalLoss(_TaskLoss):
    """Module form of :func:`focal_loss`."""

    def __init__(
        self,
        *,
        task: str,
        ignore_index: int = 255,
        gamma: float = 2.0,
        alpha: float | Sequence[float] | None = None,
    ) -> None:
        super().__init__(task=task, ignore_index=ignore_index)
        self.gamma, self.alpha = gamma, alpha

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return focal_loss(
            logits, target, task=self.task, ignore_index=self.ignore_index, gamma=self.gamma, alpha=self.alpha
        )


class _OverlapLoss(_TaskLoss):
    def __init__(
        self,
        *,
        task: str,
        ignore_index: int = 255,
        batch_dice: bool = True,
        include_background: bool = False,
        smooth: float = DEFAULT_SMOOTH,
    ) -> None:
        super().__init__(task=task, ignore_index=ignore_index)
        self.batch_dice, self.include_background, self.smooth = batch_dice, include_background, smooth

    def _common(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "ignore_index": self.ignore_index,
            "batch_dice": self.batch_dice,
            "include_background": self.include_background,
            "smooth": self.smooth,
        }


class DiceLoss(_OverlapLoss):
    """Module form of :func:`dice_loss`."""

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return dice_loss(logits, target, **self._common())


class TverskyLoss(_OverlapLoss):
    """Module form of :func:`tversky_loss` (``alpha`` weights FP, ``beta`` weights FN)."""

    def __init__(self, *, alpha: float = 0.3, beta: float = 0.7, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.alpha, self.beta = alpha, beta

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return tversky_loss(logits, target, alpha=self.alpha, beta=self.beta, **self._common())


class FocalTverskyLoss(TverskyLoss):
    """Module form of :func:`focal_tversky_loss`."""

    def __init__(self, *, gamma: float = 0.75, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gamma = gamma

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return focal_tversky_loss(
            logits, target, gamma=self.gamma, alpha=self.alpha, beta=self.beta, **self._common()
        )


class CombinedLoss(nn.Module):
    """Weighted sum ``sum_i w_i * loss_i(logits, target)`` of loss modules (weights default to 1)."""

    def __init__(self, losses: Sequence[nn.Module], weights: Sequence[float] | None = None) -> None:
        super().__init__()
        if not losses:
            raise ValueError("CombinedLoss needs at least one loss")
        weights = [1.0] * len(losses) if weights is None else [float(w) for w in weights]
        if len(weights) != len(losses):
            raise ValueError(f"CombinedLoss got {len(losses)} losses but {len(weights)} weights")
        if any(w < 0 for w in weights):
            raise ValueError(f"CombinedLoss weights must be >= 0, got {weights}")
        self.losses = nn.ModuleList(losses)
        self.weights = weights

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        total = logits.new_zeros(())
        for weight, loss in zip(self.weights, self.losses, strict=True):
            total = total + weight * loss(logits, target)
        return total


class DiceCE(CombinedLoss):
    """``lambda_dice * Dice + lambda_ce * CE`` (BCE for sigmoid outputs): the default segmentation loss.

    ``class_weights`` only weight the cross-entropy term (MONAI's ``DiceCELoss(weight=...)`` weights both).
    """

    def __init__(
        self,
        *,
        task: str,
        ignore_index: int = 255,
        class_weights: Weights = None,
        lambda_dice: float = 1.0,
        lambda_ce: float = 1.0,
        batch_dice: bool = True,
        include_background: bool = False,
        smooth: float = DEFAULT_SMOOTH,
    ) -> None:
        dice = DiceLoss(
            task=task,
            ignore_index=ignore_index,
            batch_dice=batch_dice,
            include_background=include_background,
            smooth=smooth,
        )
        ce = CELoss(task=task, ignore_index=ignore_index, class_weights=class_weights)
        super().__init__([dice, ce], [lambda_dice, lambda_ce])


class DiceFocal(CombinedLoss):
    """``lambda_dice * Dice + lambda_focal * Focal``."""

    def __init__(
        self,
        *,
        task: str,
        ignore_index: int = 255,
        gamma: float = 2.0,
        alpha: float | Sequence[float] | None = None,
        lambda_dice: float = 1.0,
        lambda_focal: float = 1.0,
        batch_dice: bool = True,
        include_background: bool = False,
        smooth: float = DEFAULT_SMOOTH,
    ) -> None:
        dice = DiceLoss(
            task=task,
            ignore_index=ignore_index,
            batch_dice=batch_dice,
            include_background=include_background,
            smooth=smooth,
        )
        focal = FocalLoss(task=task, ignore_index=ignore_index, gamma=gamma, alpha=alpha)
        super().__init__([dice, focal], [lambda_dice, lambda_focal])
