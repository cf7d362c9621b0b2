"""Skeleton recall (Kirchhoff et al., ECCV 2024) for thin structures: membranes, vessels, cracks, roads.

Dice and cross-entropy count pixels, so a one-pixel gap that cuts a vessel or a membrane costs almost nothing.
Skeleton recall asks the prediction to cover the *centre line* of every foreground structure:

* the target's skeleton ``S`` is computed per class with Lantuejoul's morphological formula
  ``S = union_k [E^k(X) - open(E^k(X))]`` (``E`` erosion and ``open`` opening by the 3x3 (x3) square),
  then widened by one pixel (dilation by the same square) and kept inside the class ("tubed" skeleton);
* loss ``1 - sum(p * S) / sum(S)`` per foreground class, the sums over the batch and space, averaged over the
  classes present in the batch; ignored pixels are not part of ``S``.

The skeleton comes from the target alone (no gradient; a few max-pooling passes on the batch, on its device),
so the loss adds little to a training step. ``dice_ce_skeleton`` is Dice + CE + ``lambda_skeleton`` x this.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from unetkit.losses._targets import Tensor, _probs_and_onehot
from unetkit.losses.modules import CombinedLoss, DiceCE, _TaskLoss


def _pool(x: Tensor) -> Tensor:
    """Maximum over the 3x3 (2D) or 3x3x3 (3D) neighbourhood of ``(N, C, *spatial)``; the border does not count."""
    pool = F.max_pool2d if x.ndim == 4 else F.max_pool3d
    return pool(x, 3, stride=1, padding=1)


def _erode(x: Tensor) -> Tensor:
    return -_pool(-x)


def morphological_skeleton(mask: Tensor, *, max_iter: int = 64) -> Tensor:
    """Lantuejoul's skeleton of a binary float ``(N, C, *spatial)`` mask (square structuring element).

    Erosion does not eat in from the array's border: a structure cut by a patch edge keeps its centre line there.
    After ``max_iter`` erosions whatever is left joins the skeleton (only blobs wider than ``2 * max_iter``).

    Example: a bar 3 pixels high gives its middle row; a 5x5 square gives its centre pixel.
    """
    if mask.ndim not in (4, 5):
        raise ValueError(f"expected a (N, C, H, W) or (N, C, D, H, W) mask, got shape {tuple(mask.shape)}")
    skeleton = torch.zeros_like(mask)
    x = mask
    for _ in range(max_iter):
        eroded = _erode(x)
        skeleton = torch.maximum(skeleton, x - _pool(eroded))  # x minus its opening
        x = eroded
        if not bool(x.any()):
            return skeleton
    return torch.maximum(skeleton, x)


def tubed_skeleton(onehot: Tensor) -> Tensor:
    """The skeleton widened by one pixel and kept inside the mask: what skeleton recall scores."""
    return _pool(morphological_skeleton(onehot)) * onehot


def skeleton_recall_loss(logits: Tensor, target: Tensor, *, task: str, ignore_index: int = 255) -> Tensor:
    """``1 - sum(p * S) / sum(S)`` per foreground class (see the module docstring); 0 when no class is present."""
    with torch.no_grad():
        _, onehot, valid, softmax = _probs_and_onehot(logits.detach(), target, task, ignore_index)
        if softmax:
            onehot = onehot[:, 1:]
        mask = (onehot > 0.5).float()
        skeleton = (tubed_skeleton(mask) * valid).to(logits.dtype)
    probs = logits.softmax(1)[:, 1:] if softmax else logits.sigmoid()
    dims = [0, *range(2, probs.ndim)]
    total = skeleton.sum(dims)
    present = total > 0
    if not bool(present.any()):
        return (logits * 0).sum()  # a zero that keeps the graph
    recall = (probs * skeleton).sum(dims)[present] / total[present]
    return (1 - recall).mean()


class SkeletonRecallLoss(_TaskLoss):
    """Module form of :func:`skeleton_recall_loss`."""

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return skeleton_recall_loss(logits, target, task=self.task, ignore_index=self.ignore_index)


class DiceCESkeleton(CombinedLoss):
    """``Dice + CE + lambda_skeleton * skeleton recall`` (the paper adds its loss to the usual Dice + CE)."""

    def __init__(
        self, *, task: str, ignore_index: int = 255, lambda_skeleton: float = 1.0, batch_dice: bool = True
    ) -> None:
        super().__init__(
            [
                DiceCE(task=task, ignore_index=ignore_index, batch_dice=batch_dice),
                SkeletonRecallLoss(task=task, ignore_index=ignore_index),
            ],
            [1.0, lambda_skeleton],
        )
