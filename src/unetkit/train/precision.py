"""Mixed precision and memory layout: the CPU fast path (bf16 + channels_last) and CUDA AMP."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def cpu_supports_bf16() -> bool:
    """True when oneDNN has native bf16 kernels here (AVX-512 BF16 / AMX), where bf16 is ~2x faster."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` (``auto`` | ``fp32`` | ``bf16`` | ``fp16``) on ``device``; None = fp32."""
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"unknown precision {precision!r}; choose auto, fp32, bf16 or fp16")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        if device.type != "cuda":
            raise ValueError("fp16 autocast needs a CUDA device; use bf16 on the CPU")
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_supports_bf16() else None


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def memory_format(spatial_dims: int) -> torch.memory_format:
    """channels_last for 2D (oneDNN/cuDNN's fast layout), channels_last_3d for volumes."""
    return torch.channels_last if spatial_dims == 2 else torch.channels_last_3d
