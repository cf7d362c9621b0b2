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
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

TASKS = ("binary", "multiclass", "multilabel")
DEFAULT_SMOOTH = 1e-5
# Keeps (1 - p)^gamma differentiable for gamma < 1 when p rounds to exactly 1.
_MIN_BASE = 1e-12

Tensor = torch.Tensor
Weights = Sequence[float] | Tensor | None


# ----------------------------------------------------------------------------------------------- targets
def _uses_softmax(logits: Tensor, task: str) -> bool:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if logits.ndim < 3:
        raise ValueError(f"logits must be (N, C, *spatial), got shape {tuple(logits.shape)}")
    channels = logits.shape[1]
    if task == "multiclass" and channels < 2:
        raise ValueError(f"task 'multiclass' needs >= 2 output channels, got {channels}")
    if task == "binary" and channels not in (1, 2):
        raise ValueError(f"task 'binary' needs 1 (sigmoid) or 2 (softmax) output channels, got {channels}")
    return task == "multiclass" or (task == "binary" and channels == 2)


def _index_target(logits: Tensor, target: Tensor, ignore_index: int) -> tuple[Tensor, Tensor]:
    """Class indices with ignored pixels set to 0, and the ``(N, *spatial)`` bool mask of valid pixels."""
    if target.ndim == logits.ndim and target.shape[1] == 1:
        target = target[:, 0]
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"target shape {tuple(target.shape)} does not fit logits {tuple(logits.shape)}: "
            f"expected class indices of shape {expected}"
        )
    if target.is_floating_point() or target.dtype == torch.bool:
        raise ValueError(f"class-index targets must be an integer tensor, got {target.dtype}")
    valid = target != ignore_index
    idx = torch.where(valid, target, torch.zeros_like(target)).long()
    channels = logits.shape[1]
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= channels):
        bad = sorted({int(v) for v in target[valid & ((target < 0) | (target >= channels))].unique()[:5]})
        raise ValueError(
            f"target holds class values {bad} outside 0..{channels - 1} (ignore_index is {ignore_index})"
        )
    return idx, valid


def _sigmoid_target(logits: Tensor, target: Tensor, ignore_index: int) -> tuple[Tensor, Tensor]:
    """Float targets shaped like ``logits`` (ignored elements set to 0) and the float mask of valid elements."""
    if logits.shape[1] == 1 and tuple(target.shape) == (logits.shape[0], *logits.shape[2:]):
        target = target.unsqueeze(1)
    if target.shape != logits.shape:
        raise ValueError(
            f"target shape {tuple(target.shape)} does not fit logits {tuple(logits.shape)}: sigmoid outputs "
            "need a target of the same shape (or (N, *spatial) for a single channel)"
        )
    valid = target != ignore_index
    t = torch.where(valid, target, torch.zeros_like(target)).to(logits.dtype)
    if t.numel() and (float(t.min()) < 0 or float(t.max()) > 1):
        raise ValueError(f"sigmoid targets must lie in [0, 1] (or equal ignore_index={ignore_index})")
    return t, valid.to(logits.dtype)


def _probs_and_onehot(
    logits: Tensor, target: Tensor, task: str, ignore_index: int
) -> tuple[Tensor, Tensor, Tensor, bool]:
    """(probabilities, one-hot target, valid mask broadcastable to them, softmax?)."""
    if _uses_softmax(logits, task):
        idx, valid = _index_target(logits, target, ignore_index)
        onehot = F.one_hot(idx, logits.shape[1]).movedim(-1, 1).to(logits.dtype)
        return logits.softmax(1), onehot, valid.unsqueeze(1).to(logits.dtype), True
    t, valid = _sigmoid_target(logits, target, ignore_index)
    return logits.sigmoid(), t, valid, False


def _class_vector(values: Weights, logits: Tensor, what: str) -> Tensor | None:
    if values is None:
        return None
    vec = torch.as_tensor(values, dtype=logits.dtype, device=logits.device).flatten()
    if vec.numel() != logits.shape[1]:
        raise ValueError(f"{what} has {vec.numel()} values but the logits have {logits.shape[1]} channels")
    if not torch.isfinite(vec).all() or (vec < 0).any():
        raise ValueError(f"{what} must be finite and non-negative, got {vec.tolist()}")
    return vec


# ---------------------------------------------------------------------------------------- pixel losses
def ce_loss(
    logits: Tensor, target: Tensor, *, task: str, ignore_index: int = 255, class_weights: Weights = None
) -> Tensor:
    """Cross-entropy (softmax outputs) or binary cross-entropy (sigmoid outputs), averaged over valid pixels.

    Args:
        logits / target / task / ignore_index: see the module docstring.
        class_weights: ``C`` non-negative values. Softmax: PyTorch ``CrossEntropyLoss(weight=...)`` semantics,
            i.e. ``sum(w[y] * nll) / sum(w[y])`` over valid pixels. Sigmoid: per-channel ``pos_weight`` of
            ``BCEWithLogitsLoss`` (scales the positive term), averaged over valid elements.

    Returns:
        Scalar tensor.
    """
    weights = _class_vector(class_weights, logits, "class_weights")
    if _uses_softmax(logits, task):
        idx, valid = _index_target(logits, target, ignore_index)
        nll = -logits.log_softmax(1).gather(1, idx.unsqueeze(1)).squeeze(1)
        pixel_w = valid.to(logits.dtype) if weights is None else weights[idx] * valid
        return (nll * pixel_w).sum() / pixel_w.sum().clamp_min(_MIN_BASE)
    t, valid = _sigmoid_target(logits, target, ignore_index)
    pos_weight = None if weights is None else weights.view(1, -1, *([1] * (logits.ndim - 2)))
    bce = F.binary_cross_entropy_with_logits(logits, t, pos_weight=pos_weight, reduction="none")
    return (bce * valid).sum() / valid.sum().clamp_min(1)


def _softmax_alpha(alpha: float | Weights, logits: Tensor) -> Tensor | None:
    if alpha is None:
        return None
    if isinstance(alpha, (int, float)):
        rest = [float(alpha)] * (logits.shape[1] - 1)
        return torch.tensor([1.0 - float(alpha), *rest], dtype=logits.dtype, device=logits.device)
    return _class_vector(alpha, logits, "alpha")


def focal_loss(
    logits: Tensor,
    target: Tensor,
    *,
    task: str,
    ignore_index: int = 255,
    gamma: float = 2.0,
    alpha: float | Weights = None,
) -> Tensor:
    """Focal loss ``-alpha_t (1 - p_t)^gamma log(p_t)`` (Lin et al. 2017), mean over valid pixels/elements.

    With ``gamma=0`` and ``alpha=None`` it equals :func:`ce_loss` without class weights.

    Args:
        gamma: focusing exponent (>= 0).
        alpha: softmax outputs: a float gives background ``1 - alpha`` and every other class ``alpha``; a
            sequence gives one weight per class. Sigmoid outputs: float or per-channel ``a`` weighting
            positives by ``a`` and negatives by ``1 - a``. None: no weighting.

    Returns:
        Scalar tensor. Softmax: mean over valid pixels (MONAI's ``FocalLoss(use_softmax=True)`` also divides
        by the number of channels, so it is ``C`` times smaller). Sigmoid: mean over valid elements.
    """
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    if _uses_softmax(logits, task):
        idx, valid = _index_target(logits, target, ignore_index)
        logp_t = logits.log_softmax(1).gather(1, idx.unsqueeze(1)).squeeze(1)
        modulator = (-torch.expm1(logp_t)).clamp_min(_MIN_BASE).pow(gamma)
        loss = -modulator * logp_t
        weights = _softmax_alpha(alpha, logits)
        if weights is not None:
            loss = loss * weights[idx]
        valid_f = valid.to(logits.dtype)
        return (loss * valid_f).sum() / valid_f.sum().clamp_min(1)
    t, valid = _sigmoid_target(logits, target, ignore_index)
    bce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    # (1 - p_t)^gamma computed in log space: finite gradients even when p_t rounds to 1.
    loss = torch.exp(gamma * F.logsigmoid(-logits * (2 * t - 1))) * bce
    if alpha is not None:
        a = torch.as_tensor(alpha, dtype=logits.dtype, device=logits.device)
        if a.ndim:
            a = _class_vector(a, logits, "alpha").view(1, -1, *([1] * (logits.ndim - 2)))  # type: ignore[union-attr]
        loss = loss * (t * a + (1 - t) * (1 - a))
    return (loss * valid).sum() / valid.sum().clamp_min(1)


# ------------------------------------------------------------------------------------- overlap losses
def _soft_counts(
    logits: Tensor,
    target: Tensor,
    *,
    task: str,
    ignore_index: int,
    batch_dice: bool,
    include_background: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Soft TP, FP, FN per class: shape ``(C',)`` with ``batch_dice`` else ``(N, C')``."""
    probs, onehot, valid, softmax = _probs_and_onehot(logits, target, task, ignore_index)
    if softmax and not include_background:
        probs, onehot = probs[:, 1:], onehot[:, 1:]
    p, g = probs * valid, onehot * valid
    dims = [*([0] if batch_dice else []), *range(2, p.ndim)]
    tp = (p * g).sum(dims)
    return tp, p.sum(dims) - tp, g.sum(dims) - tp


def dice_loss(
    logits: Tensor,
    target: Tensor,
    *,
    task: str,
    ignore_index: int = 255,
    batch_dice: bool = True,
    include_background: bool = False,
    smooth: float = DEFAULT_SMOOTH,
) -> Tensor:
    """Soft Dice loss ``1 - (2 TP + s) / (2 TP + FP + FN + s)``, mean over classes (and samples unless
    ``batch_dice``). Softmax for multiclass / 2-channel binary, sigmoid otherwise; see the module docstring
    for ``batch_dice``, ``include_background`` and the smoothing ``s``.

    Returns:
        Scalar tensor in [0, 1].
    """
    tp, fp, fn = _soft_counts(
        logits,
        target,
        task=task,
        ignore_index=ignore_index,
        batch_dice=batch_dice,
        include_background=include_background,
    )
    return (1 - (2 * tp + smooth) / (2 * tp + fp + fn + smooth)).mean()


def tversky_index(
    logits: Tensor,
    target: Tensor,
    *,
    task: str,
    ignore_index: int = 255,
    alpha: float = 0.3,
    beta: float = 0.7,
    batch_dice: bool = True,
    include_background: bool = False,
    smooth: float = DEFAULT_SMOOTH,
) -> Tensor:
    """Soft Tversky index ``(TP + s) / (TP + alpha FP + beta FN + s)`` per class (``(C',)`` or ``(N, C')``).

    ``alpha`` weights false positives, ``beta`` false negatives; ``beta > alpha`` favours recall (small
    structures). ``alpha = beta = 0.5`` is Dice up to the smoothing term.
    """
    if alpha < 0 or beta < 0:
        raise ValueError(f"Tversky alpha and beta must be >= 0, got {alpha}, {beta}")
    tp, fp, fn = _soft_counts(
        logits,
        target,
        task=task,
        ignore_index=ignore_index,
        batch_dice=batch_dice,
        include_background=include_background,
    )
    return (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)


def tversky_loss(logits: Tensor, target: Tensor, **kwargs: Any) -> Tensor:
    """``mean(1 - tversky_index(...))``; keyword arguments as :func:`tversky_index`."""
    return (1 - tversky_index(logits, target, **kwargs)).mean()


def focal_tversky_loss(logits: Tensor, target: Tensor, *, gamma: float = 0.75, **kwargs: Any) -> Tensor:
    """Focal Tversky (Abraham & Khan 2019): ``mean((1 - TI) ^ gamma)``; ``gamma < 1`` boosts the loss of
    classes that are already nearly right less than ``gamma = 1`` (plain Tversky) would. Other keyword
    arguments as :func:`tversky_index`.
    """
    if gamma <= 0:
        raise ValueError(f"focal Tversky gamma must be > 0, got {gamma}")
    # Clamped so that a perfect score (1 - TI == 0) keeps a finite gradient when gamma < 1.
    return (1 - tversky_index(logits, target, **kwargs)).clamp_min(_MIN_BASE).pow(gamma).mean()


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


# ----------------------------------------------------------------------------------------------- factory
_LOSSES: dict[str, type[nn.Module]] = {
    "dice_ce": DiceCE,
    "dice": DiceLoss,
    "ce": CELoss,
    "focal": FocalLoss,
    "tversky": TverskyLoss,
    "focal_tversky": FocalTverskyLoss,
    "dice_focal": DiceFocal,
}
LOSS_NAMES = tuple(_LOSSES)
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
    ``focal_tversky``, ``dice_focal``.

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
