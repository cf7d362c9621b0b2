"""The losses as pure functions of ``(logits, target)``: cross-entropy, focal, Dice, Tversky, focal Tversky."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from unetkit.losses._targets import (
    _MIN_BASE,
    DEFAULT_SMOOTH,
    Tensor,
    Weights,
    _class_vector,
    _index_target,
    _probs_and_onehot,
    _sigmoid_target,
    _uses_softmax,
)


# ---------------------------------------------------------------------------------------- pixel losses
def ce_loss(
    logits: Tensor, target: Tensor, *, task: str, ignore_index: int = 255, class_weights: Weights = None
) -> Tensor:
    """Cross-entropy (softmax outputs) or binary cross-entropy (sigmoid outputs), averaged over valid pixels.

    Args:
        logits: ``(N, C, *spatial)`` raw scores.
        target: class indices ``(N, *spatial)`` or, for sigmoid outputs, floats (see :mod:`unetkit.losses`).
        task: ``binary`` | ``multiclass`` | ``multilabel``.
        ignore_index: target value that contributes nothing.
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
    alpha: float = 0.3,
    beta: float = 0.7,
    smooth: float = DEFAULT_SMOOTH,
    **counting: Any,
) -> Tensor:
    """Soft Tversky index ``(TP + s) / (TP + alpha FP + beta FN + s)`` per class (``(C',)`` or ``(N, C')``).

    ``alpha`` weights false positives, ``beta`` false negatives; ``beta > alpha`` favours recall (small
    structures). ``alpha = beta = 0.5`` is Dice up to the smoothing term. ``counting``: how the soft counts
    are taken, as for :func:`dice_loss` (``ignore_index=255``, ``batch_dice=True``,
    ``include_background=False``).
    """
    if alpha < 0 or beta < 0:
        raise ValueError(f"Tversky alpha and beta must be >= 0, got {alpha}, {beta}")
    unknown = set(counting) - {"ignore_index", "batch_dice", "include_background"}
    if unknown:
        raise TypeError(f"tversky_index() got unexpected keyword arguments: {', '.join(sorted(unknown))}")
    options = {"ignore_index": 255, "batch_dice": True, "include_background": False, **counting}
    tp, fp, fn = _soft_counts(logits, target, task=task, **options)
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
