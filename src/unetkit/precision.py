"""Mixed precision and memory layout: the CPU fast path (bf16 + channels_last) and CUDA AMP.

Training and inference ask :func:`choose_precision` which dtype and layout to use; its answer carries the reason
(the CPU flags that decided it), which the commands print and the run records. ``auto`` uses bf16 only where it
is native (CPUs with AVX-512 BF16 or AMX, and CUDA); elsewhere bf16 is emulated and slower than fp32.

Tests (and a developer on either kind of CPU) can make the code believe native bf16 is present or absent by
replacing :func:`cpu_supports_bf16` (``pytest --native-bf16=yes|no``, see ``tests/conftest.py``): every decision
goes through that one function, looked up at call time.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# The flags that decide (or explain) a CPU fast path; every benchmark records them.
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8")
_DTYPE_NAMES = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


@functools.cache
def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> dict[str, bool]:
    """Which of :data:`CPU_FLAGS` this machine's CPU reports (all False where ``/proc/cpuinfo`` is unreadable)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        text = ""
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    present = set(line.partition(":")[2].split())
    return {flag: flag in present for flag in CPU_FLAGS}


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when a CUDA device is present, else ``cpu``; any other name as given."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


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
    if precision not in PRECISIONS:
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


@dataclass(frozen=True)
class PrecisionChoice:
    """What a stage computes in: ``dtype`` (autocast dtype, None = fp32), ``layout`` (None = contiguous), and why."""

    requested: str
    dtype: torch.dtype | None
    layout: torch.memory_format | None
    reason: str

    @property
    def name(self) -> str:
        return _DTYPE_NAMES[self.dtype]

    def describe(self) -> str:
        """One line for the user, e.g. ``precision: bf16 autocast, channels_last (auto: ...)``."""
        if self.requested == "int8":  # a quantised ONNX graph (unetkit export --int8): int8 weights and activations
            what = "int8 (static QDQ)"
        else:
            what = "fp32" if self.dtype is None else f"{self.name} autocast"
        layout = {None: "contiguous", torch.channels_last: "channels_last", torch.channels_last_3d: "channels_last_3d"}
        return f"precision: {what}, {layout[self.layout]} layout ({self.reason})"

    def to_dict(self) -> dict[str, object]:
        """JSON-ready record for a run or a benchmark: the choice, its reason and the CPU flags."""
        return {"requested": self.requested, "dtype": self.name, "layout": "contiguous" if self.layout is None
                else str(self.layout).removeprefix("torch."), "reason": self.reason, "cpu_flags": cpu_flags()}


def choose_precision(precision: str, device: torch.device, *, spatial_dims: int, inference: bool) -> PrecisionChoice:
    """The dtype and layout for training (``inference=False``) or the inference fast path, with the reason.

    Training: :func:`resolve_precision`; channels_last only with autocast. Inference: ``auto`` is bf16 on CUDA
    and on CPUs with native bf16 (no loss scaling is involved, and bf16 keeps fp32's range), else fp32; the
    fast path always uses channels_last.

    Raises:
        ValueError: unknown precision, or fp16 on a CPU.
    """
    device = torch.device(device)
    if inference and precision == "auto" and device.type == "cuda":
        dtype: torch.dtype | None = torch.bfloat16
    else:
        dtype = resolve_precision(precision, device)
    layout = memory_format(spatial_dims) if (inference or dtype is not None) else None
    return PrecisionChoice(requested=precision, dtype=dtype, layout=layout, reason=_reason(precision, device))


def _reason(precision: str, device: torch.device) -> str:
    if precision != "auto":
        return f"--precision {precision}"
    if device.type == "cuda":
        return "auto: CUDA"
    flags = cpu_flags()
    shown = " ".join(f for f in ("avx512_bf16", "amx_bf16") if flags[f]) or "neither avx512_bf16 nor amx_bf16"
    if cpu_supports_bf16():
        return f"auto: this CPU has native bf16 kernels (CPU flags: {shown})"
    return f"auto: no native bf16 on this CPU, where bf16 would be emulated and slower (CPU flags: {shown})"


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
