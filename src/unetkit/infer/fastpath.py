"""Inference fast path: fold batch norm into the preceding conv, channels_last layout, bf16 where native.

Folding is exact in real arithmetic (``bn(conv(x)) == conv'(x)`` with ``w' = w * g / s``,
``b' = (b - mu) * g / s + beta``, ``s = sqrt(var + eps)``) and removes a memory pass per layer.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from unetkit.precision import PrecisionChoice, choose_precision

_CONVS = (nn.Conv2d, nn.Conv3d)
_BNS = (nn.BatchNorm2d, nn.BatchNorm3d)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval mode) where every ``Conv -> BatchNorm`` pair inside a Sequential is one conv."""
    model = copy.deepcopy(model).eval()
    for module in model.modules():
        if isinstance(module, nn.Sequential):
            _fold_sequential(module)
    return model


def _fold_sequential(seq: nn.Sequential) -> None:
    names = list(seq._modules)
    for a, b in zip(names, names[1:], strict=False):
        conv, bn = seq._modules[a], seq._modules[b]
        if isinstance(conv, _CONVS) and isinstance(bn, _BNS) and bn.track_running_stats:
            seq._modules[a] = _fused(conv, bn)
            seq._modules[b] = nn.Identity()


@torch.no_grad()
def _fused(conv: nn.Conv2d | nn.Conv3d, bn: nn.BatchNorm2d | nn.BatchNorm3d) -> nn.Module:
    # Computed in float64 and rounded once, so the folded weights are as close to exact as fp32 allows.
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a batch norm without running statistics (track_running_stats=False)")
    fused = copy.deepcopy(conv)
    weight = conv.weight.double()
    mean, var = bn.running_mean.double(), bn.running_var.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(mean)  # affine=False
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + bn.eps)
    shape = (-1,) + (1,) * (weight.ndim - 1)
    fused.weight.copy_((weight * scale.reshape(shape)).to(conv.weight.dtype))
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(mean)
    fused.bias = nn.Parameter(((bias - mean) * scale + beta).to(conv.weight.dtype))
    return fused


def prepare_for_inference(
    model: nn.Module, *, spatial_dims: int, fast: bool, device: torch.device, precision: str = "auto"
) -> tuple[nn.Module, PrecisionChoice]:
    """Return ``(model, precision choice)`` for the chosen path.

    ``fast=False`` is plain eager fp32 (``precision`` must then be ``auto`` or ``fp32``). ``fast=True`` folds BN
    and uses channels_last, plus the autocast dtype :func:`unetkit.precision.choose_precision` picks for
    ``precision``: with ``auto``, bf16 where the hardware has native bf16 (CUDA, or CPUs with AVX-512 BF16 /
    AMX; elsewhere bf16 is emulated and slower than fp32, so it is not used).

    Raises:
        ValueError: an unknown precision, or one other than fp32 without the fast path.
    """
    model = model.to(device).eval()
    if not fast:
        if precision not in ("auto", "fp32"):
            raise ValueError(f"precision {precision!r} needs the fast path; drop --no-fast or use fp32")
        return model, PrecisionChoice(requested=precision, dtype=None, layout=None, reason="plain eager path")
    choice = choose_precision(precision, device, spatial_dims=spatial_dims, inference=True)
    model = fold_batchnorm(model)
    if choice.layout is not None:  # always set on the inference path
        model = model.to(memory_format=choice.layout)
    return model, choice
