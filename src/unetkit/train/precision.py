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
    """The autocast dtype for ``precision`` (``auto`` | ``fp32`` | ``bf16`` | ``fp16``) on ``device``; None = fp32.

    ``auto``: fp16 on CUDA (with a GradScaler, see :func:`grad_scaler_for`); on a CPU bf16 where oneDNN has
    native bf16 kernels, else fp32.
    """
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
        # fp16 with a loss scaler, as nnU-Net: on an H200 the default Lite0 U-Net trained at 7.0 steps/s in fp16
        # and 2.8 in bf16 (depthwise convolutions); the plain U-Net at 17.5 vs 16.5 (benchmarks/gpu_check.sh).
        return torch.float16
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


def needs_grad_scaler(device: torch.device, dtype: torch.dtype | None) -> bool:
    """True for fp16 autocast on CUDA: fp16 gradients underflow to 0 without loss scaling.

    bf16 has fp32's exponent range (no scaling needed) and the CPU path never uses fp16.
    """
    return device.type == "cuda" and dtype == torch.float16


def grad_scaler_for(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler | None:
    """A ``torch.amp.GradScaler('cuda')`` when :func:`needs_grad_scaler`, else None (plain fp32/bf16 steps)."""
    return torch.amp.GradScaler("cuda") if needs_grad_scaler(device, dtype) else None


def backward_and_step(
    loss: torch.Tensor,
    *,
    optimizer: torch.optim.Optimizer,
    parameters: list[torch.nn.Parameter],
    grad_clip: float | None,
    scaler: torch.amp.GradScaler | None,
) -> None:
    """One optimiser step from ``loss``: backward, optional gradient-norm clipping, step.

    With a ``scaler`` the loss is scaled before backward, the gradients are unscaled before clipping
    (so ``grad_clip`` applies to the true gradients), and the step is skipped (and the scale lowered)
    when they overflowed; without one this is the plain fp32/bf16 step.
    """
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
        optimizer.step()
        return
    scaler.scale(loss).backward()
    if grad_clip:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
    scaler.step(optimizer)
    scaler.update()
