"""Segmentation losses on logits, for 2D and 3D, batch-first.

Inputs
    ``logits``: ``(N, C, *spatial)`` raw scores (no activation applied).
    ``target`` depends on ``task``:

    * ``multiclass``: softmax over ``C >= 2`` channels; target ``(N, *spatial)`` integer class indices
      (``(N, 1, *spatial)`` is accepted too).
    * ``binary``: with ``C == 2`` exactly like multiclass (class 0 = background). With ``C == 1`` one
      sigmoid channel; target ``(N, *spatial)`` indices in {0, 1} or ``(N, 1, *spatial)`` floats in [0, 1].
    * ``multilabel``: one sigmoid per channel; target ``(N, C, *spatial)`` floats in [0, 1].

``ignore_index`` (default 255): target elements equal to it contribute nothing, with zero gradient, to
every loss here (cross-entropy, Dice, focal, Tversky). Class-index targets are ignored per pixel; sigmoid
targets per element. A batch whose pixels are all ignored gives a loss of 0, not NaN.

Soft Dice / Tversky, per class ``c``: ``TP = sum(p * g)``, ``FP = sum(p) - TP``, ``FN = sum(g) - TP``, with
``p`` the probability and ``g`` the one-hot target, both zeroed on ignored pixels.

* Dice loss ``1 - (2 TP + s) / (2 TP + FP + FN + s)``; Tversky loss ``1 - (TP + s) / (TP + a FP + b FN + s)``.
* Smoothing ``s`` (default 1e-5, MONAI's default) only keeps the ratio defined: a class absent from both
  target and prediction scores 1 (loss 0); a class absent from the target but predicted scores ~0 (loss ~1).
* ``batch_dice=True`` (default, nnU-Net style) sums the counts over the batch and space, giving one score per
  class; empty patches then do not each pull their own loss towards 1. ``batch_dice=False`` scores every
  (sample, class) pair. The loss is the mean over the scores.
* ``include_background`` (default False) only applies to softmax outputs: False drops channel 0. Sigmoid
  channels are all foreground and always kept.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch.nn as nn

from unetkit.choices import LOSS_NAMES
from unetkit.losses._targets import DEFAULT_SMOOTH, TASKS, Weights
from unetkit.losses.deep_supervision import DeepSupervisionLoss, deep_supervision_weights, resize_target
from unetkit.losses.functional import (
    ce_loss,
    dice_loss,
    focal_loss,
    focal_tversky_loss,
    tversky_index,
    tversky_loss,
)
from unetkit.losses.modules import (
    CELoss,
    CombinedLoss,
    DiceCE,
    DiceFocal,
    DiceLoss,
    FocalLoss,
    FocalTverskyLoss,
    TverskyLoss,
    _OverlapLoss,
)
from unetkit.losses.skeleton import (
    DiceCESkeleton,
    SkeletonRecallLoss,
    morphological_skeleton,
    skeleton_recall_loss,
)

__all__ = [
    "DEFAULT_SMOOTH",
    "LOSS_NAMES",
    "TASKS",
    "CELoss",
    "CombinedLoss",
    "DeepSupervisionLoss",
    "DiceCE",
    "DiceCESkeleton",
    "DiceFocal",
    "DiceLoss",
    "FocalLoss",
    "FocalTverskyLoss",
    "SkeletonRecallLoss",
    "TverskyLoss",
    "build_loss",
    "ce_loss",
    "deep_supervision_weights",
    "dice_loss",
    "focal_loss",
    "focal_tversky_loss",
    "loss_options",
    "morphological_skeleton",
    "resize_target",
    "skeleton_recall_loss",
    "tversky_index",
    "tversky_loss",
]

# ----------------------------------------------------------------------------------------------- factory
_LOSSES: dict[str, type[nn.Module]] = {
    "dice_ce": DiceCE,
    "dice": DiceLoss,
    "ce": CELoss,
    "focal": FocalLoss,
    "tversky": TverskyLoss,
    "focal_tversky": FocalTverskyLoss,
    "dice_focal": DiceFocal,
    "skeleton_recall": SkeletonRecallLoss,
    "dice_ce_skeleton": DiceCESkeleton,
}
_OVERLAP_OPTIONS = ("batch_dice", "include_background", "smooth")


def loss_options(name: str) -> set[str]:
    """The keyword options the loss ``name`` takes (besides ``task`` and ``ignore_index``)."""
    if name not in _LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid names: {', '.join(LOSS_NAMES)}")
    return _options(_LOSSES[name]) - {"task", "ignore_index"}


def _options(cls: type[nn.Module]) -> set[str]:
    names = {p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "kwargs")}
    if issubclass(cls, _OverlapLoss):
        names |= {"task", "ignore_index", *_OVERLAP_OPTIONS}
    if cls is FocalTverskyLoss:
        names |= {"alpha", "beta"}
    return names


def build_loss(
    name: str = "dice_ce",
    *,
    task: str,
    ignore_index: int = 255,
    class_weights: Weights = None,
    deep_supervision: bool = True,
    **kwargs: Any,
) -> nn.Module:
    """Build a loss by name: ``dice_ce`` (default), ``dice``, ``ce``, ``focal``, ``tversky``,
    ``focal_tversky``, ``dice_focal``, ``skeleton_recall``, ``dice_ce_skeleton`` (thin structures, see
    :mod:`unetkit.losses.skeleton`).

    Args:
        name: one of :data:`LOSS_NAMES`.
        task: ``binary`` | ``multiclass`` | ``multilabel``.
        ignore_index: target value excluded from the loss.
        class_weights: per-class weights for the cross-entropy term (``ce`` and ``dice_ce`` only).
        deep_supervision: wrap the loss in :class:`DeepSupervisionLoss`, so the returned module accepts either
            one logits tensor or a list of them (full resolution first); a plain tensor gives the same value.
        **kwargs: options of the loss class (e.g. ``gamma``, ``alpha``, ``beta``, ``batch_dice``).

    Raises:
        ValueError: unknown name or task, or an option the loss does not take.
    """
    if name not in _LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid names: {', '.join(LOSS_NAMES)}")
    cls = _LOSSES[name]
    if class_weights is not None:
        kwargs["class_weights"] = class_weights
    unknown = sorted(set(kwargs) - _options(cls))
    if unknown:
        valid = sorted(_options(cls) - {"task", "ignore_index"})
        raise ValueError(f"loss {name!r} does not take {', '.join(unknown)}; its options: {', '.join(valid)}")
    loss = cls(task=task, ignore_index=ignore_index, **kwargs)
    return DeepSupervisionLoss(loss) if deep_supervision else loss
