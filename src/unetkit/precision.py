"""Mixed precision and memory layout, chosen per CPU kind: bf16 where it is native, fp32 elsewhere.

Training and inference ask :func:`choose_precision` which dtype and layout to use; its answer carries the reason
(the CPU kind and the flags that decided it), which the commands print and the run records.

The rule, in one place (:func:`cpu_kind`, then :data:`KIND_FACTS`), from the flags of ``/proc/cpuinfo``:

============================  ==============================  =========  ===========================
CPU kind                      flags                           auto       fp32 training layout
============================  ==============================  =========  ===========================
``x86-amx``                   ``amx_bf16``                    bf16       (bf16: channels_last)
``x86-avx512-bf16``           ``avx512_bf16`` (AMD Zen 4)     bf16       (bf16: channels_last)
``x86-avx512``                ``avx512f``, no bf16 flag       fp32       contiguous
``x86-avx2``                  ``avx2`` only                   fp32       channels_last (measured)
``aarch64-bf16``              ``bf16`` in ``Features``        bf16       (bf16: channels_last)
``aarch64`` / ``other``       --                              fp32       contiguous
============================  ==============================  =========  ===========================

oneDNN *can* run bf16 on any AVX-512 CPU (``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` is true there), but
without ``avx512_bf16``/``amx_bf16`` it emulates it, and emulated bf16 is slower than fp32 (an Intel Ice Lake:
0.50 training steps/s in bf16 against 0.81 in fp32), so the flags decide, not oneDNN. CUDA: fp16 with a loss scaler
for training, bf16 for inference.

Tests simulate every kind by replacing :func:`cpu_flags` (and the machine name) or :func:`cpu_supports_bf16`
(``pytest --native-bf16=yes|no``, see ``tests/conftest.py``): every decision goes through them, looked up at call
time.
"""

from __future__ import annotations

import contextlib
import functools
import platform
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from unetkit.choices import PRECISIONS

# The flags that decide (or explain) a CPU fast path; every benchmark records them. ``bf16`` is aarch64's feature
# name (``Features`` line); the others are x86 ``flags``.
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8", "bf16")
_DTYPE_NAMES = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


@dataclass(frozen=True)
class KindFacts:
    """What unetkit knows of one CPU kind: whether bf16 is native, the faster fp32 training layout and why."""

    native_bf16: bool
    fp32_channels_last: bool
    why: str


# The per-kind facts. fp32_channels_last is True only where it was measured faster (benchmarks/bench_precision.py,
# default 2D plan); elsewhere training keeps the contiguous layout it has always used.
KIND_FACTS = {
    "x86-amx": KindFacts(True, False, "AMX: bf16 is native"),
    "x86-avx512-bf16": KindFacts(True, False, "AVX-512 BF16: bf16 is native"),
    "x86-avx512": KindFacts(False, False, "AVX-512 without avx512_bf16/amx_bf16: bf16 would be emulated, "
                                          "slower than fp32"),
    "x86-avx2": KindFacts(False, True, "AVX2 without AVX-512: no bf16 instructions"),
    "aarch64-bf16": KindFacts(True, False, "Arm with the bf16 feature: bf16 is native"),
    "aarch64": KindFacts(False, False, "Arm without the bf16 feature"),
    "other": KindFacts(False, False, "no bf16 instructions known on this CPU"),
}


@functools.cache
def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> dict[str, bool]:
    """Which of :data:`CPU_FLAGS` this machine's CPU reports (all False where ``/proc/cpuinfo`` is unreadable)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        text = ""
    return parse_cpu_flags(text)


def parse_cpu_flags(cpuinfo_text: str) -> dict[str, bool]:
    """:data:`CPU_FLAGS` present in the first ``flags`` (x86) or ``Features`` (Arm) line of a ``/proc/cpuinfo`` text."""
    line = next((ln for ln in cpuinfo_text.splitlines() if ln.startswith(("flags", "Features"))), "")
    present = set(line.partition(":")[2].split())
    return {flag: flag in present for flag in CPU_FLAGS}


def cpu_kind(flags: dict[str, bool] | None = None, machine: str | None = None) -> str:
    """This CPU's kind, one of :data:`KIND_FACTS`' keys, from its flags and ``platform.machine()``."""
    flags = cpu_flags() if flags is None else flags
    machine = (machine or platform.machine()).lower()
    if machine in ("aarch64", "arm64"):
        return "aarch64-bf16" if flags.get("bf16") else "aarch64"
    if flags.get("amx_bf16"):
        return "x86-amx"
    if flags.get("avx512_bf16"):
        return "x86-avx512-bf16"
    if flags.get("avx512f"):
        return "x86-avx512"
    if flags.get("avx2"):
        return "x86-avx2"
    return "other"


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when a CUDA device is present, else ``cpu``; any other name as given."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def cpu_supports_bf16() -> bool:
    """True where this CPU computes bf16 natively (:data:`KIND_FACTS`), so bf16 autocast is ~2x faster than fp32."""
    return KIND_FACTS[cpu_kind()].native_bf16


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

    Training: :func:`resolve_precision`; channels_last with autocast, and in fp32 where :data:`KIND_FACTS` says
    it is the faster layout on this CPU kind. Inference: ``auto`` is bf16 on CUDA and on CPUs with native bf16,
    else fp32; the fast path always uses channels_last.

    Raises:
        ValueError: unknown precision, or fp16 on a CPU.
    """
    device = torch.device(device)
    if inference and precision == "auto" and device.type == "cuda":
        dtype: torch.dtype | None = torch.bfloat16
    else:
        dtype = resolve_precision(precision, device)
    channels_last = inference or dtype is not None or (
        device.type == "cpu" and KIND_FACTS[cpu_kind()].fp32_channels_last)
    layout = memory_format(spatial_dims) if channels_last else None
    return PrecisionChoice(requested=precision, dtype=dtype, layout=layout, reason=_reason(precision, device))


def _reason(precision: str, device: torch.device) -> str:
    if precision != "auto":
        return f"--precision {precision}"
    if device.type == "cuda":
        return "auto: CUDA"
    kind = cpu_kind()
    flags = cpu_flags()
    tracked = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "bf16")
    shown = " ".join(f for f in tracked if flags.get(f)) or f"none of {' '.join(tracked)}"
    # cpu_supports_bf16 (not the table) decides, so a simulated answer and its reason never disagree.
    if cpu_supports_bf16():
        return f"auto: bf16, native on this {kind} CPU ({KIND_FACTS[kind].why}; CPU flags: {shown})"
    return f"auto: fp32 on this {kind} CPU ({KIND_FACTS[kind].why}; CPU flags: {shown})"


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
