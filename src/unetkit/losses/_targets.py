"""Logits and targets in the shapes every loss works on (see the package docstring for the conventions)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

TASKS = ("binary", "multiclass", "multilabel")
DEFAULT_SMOOTH = 1e-5
# Keeps (1 - p)^gamma differentiable for gamma < 1 when p rounds to exactly 1.
_MIN_BASE = 1e-12

Tensor = torch.Tensor
Weights = Sequence[float] | Tensor | None


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
