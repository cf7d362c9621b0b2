"""Inference fast path: fold batch norm into the preceding conv, channels_last layout, bf16 where native.

Folding is exact in real arithmetic (``bn(conv(x)) == conv'(x)`` with ``w' = w * g / s``,
``b' = (b - mu) * g / s + beta``, ``s = sqrt(var + eps)``) and removes a memory pass per layer.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from unetkit.train.precision import cpu_supports_bf16, memory_format

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
    for a, b in zip(names, names[1:]):
        conv, bn = seq._modules[a], seq._modules[b]
        if isinstance(conv, _CONVS) and isinstance(bn, _BNS) and bn.track_running_stats:
            seq._modules[a] = _fused(conv, bn)
            seq._modules[b] = nn.Identity()


@torch.no_grad()
def _fused(conv: nn.Module, bn: nn.Module) -> nn.Module:
    fused = copy.deepcopy(conv)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shape = (-1,) + (1,) * (conv.weight.ndim - 1)
    fused.weight.copy_(conv.weight * scale.reshape(shape))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias)
    return fused


def prepare_for_inference(
    model: nn.Module, *, spatial_dims: int, fast: bool, device: torch.device
) -> tuple[nn.Module, torch.dtype | None, torch.memory_format | None]:
    """Return ``(model, autocast dtype or None, memory format or None)`` for the chosen path.

    ``fast=False`` is plain eager fp32. ``fast=True`` folds BN and uses channels_last, plus bf16 autocast
    where the hardware has native bf16 (CUDA, or CPUs with AVX-512 BF16 / AMX; elsewhere bf16 is emulated
    and slower than fp32, so it is not used).
    """
    model = model.to(device).eval()
    if not fast:
        return model, None, None
    model = fold_batchnorm(model)
    layout = memory_format(spatial_dims)
    model = model.to(memory_format=layout)
    native_bf16 = device.type == "cuda" or cpu_supports_bf16()
    return model, (torch.bfloat16 if native_bf16 else None), layout
