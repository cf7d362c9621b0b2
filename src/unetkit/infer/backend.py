"""Which inference backend runs a trained model on this machine, and the ONNX graphs cached beside its weights.

The rule (:func:`choose_backend`), one function whose reason is printed by every command that predicts:

1. ``torch`` on CUDA (cuDNN, bf16 autocast).
2. ``int8`` when the run has an accepted int8 graph beside its weights (``unetkit export RUN --int8`` writes
   ``RUN/best/model.int8.onnx`` only when its validation Dice holds) and ONNX Runtime is installed.
3. ``onnx`` (ONNX Runtime, fp32) on CPU kinds where it was measured faster than the torch fast path (see
   :data:`ONNX_FASTER`) and ONNX Runtime is installed: the graph is exported once, parity-checked against PyTorch,
   and cached as ``RUN/best/model.onnx`` with its report; it is exported again when the weights (SHA-256) or the
   unetkit version change.
4. ``torch`` otherwise: the fast path (BN folded, channels_last, bf16 where native).

Example:
    >>> choice = choose_backend(Path("runs/isbi/best"), requested="auto", device="cpu")
    >>> choice.backend, choice.reason
    ('onnx', 'auto: ONNX Runtime fp32 ... on this x86-avx2 CPU')
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from unetkit.untrusted import MiB, UntrustedFileError, load_json_limited

BACKEND_CHOICES = ("auto", "torch", "onnx", "int8")
GRAPH_NAME = "model.onnx"
INT8_NAME = "model.int8.onnx"

# CPU kinds where ONNX Runtime fp32 was measured faster than the torch fp32 fast path on the default plan at
# 512 x 512 (benchmarks/bench_precision.py and bench_deploy.py): Intel Ice Lake (avx512 without bf16): 0.111 s vs
# 0.217 s per image; this project's AVX2 AMD EPYC: see the benchmarks page. Kinds with native bf16 keep torch (bf16
# was within 7 % of ONNX Runtime fp32 on AMX); unmeasured kinds keep torch.
ONNX_FASTER = frozenset({"x86-avx512", "x86-avx2"})


@dataclass(frozen=True)
class BackendChoice:
    """``backend`` (``torch`` | ``onnx`` | ``int8``), the graph it runs (None for torch) and why it was chosen."""

    backend: str
    graph: Path | None
    reason: str


def choose_backend(weights: Path, *, requested: str, device: str) -> BackendChoice:
    """The backend for the checkpoint folder ``weights`` (``RUN/best``) on ``device``, as the module docstring says.

    ``requested`` other than ``auto`` is obeyed (``int8`` needs the accepted graph; ``onnx`` exports the cached
    graph if needed). Nothing is exported here: :func:`cached_graph` does that when the predictor is built.

    Raises:
        ValueError: an unknown backend, ``onnx``/``int8`` on CUDA or without ONNX Runtime, ``int8`` without an
            accepted graph for these weights.
    """
    from unetkit.precision import cpu_kind, cpu_supports_bf16

    if requested not in BACKEND_CHOICES:
        raise ValueError(f"unknown backend {requested!r}; choose one of {', '.join(BACKEND_CHOICES)}")
    int8 = weights / INT8_NAME
    if requested != "auto":
        if requested != "torch" and (device != "cpu" or not onnxruntime_installed()):
            raise ValueError(f"--backend {requested} runs ONNX Runtime on the CPU: "
                             + ("use --device cpu" if device != "cpu" else "pip install 'unetkit[onnx]'"))
        if requested == "int8" and not graph_matches(int8, weights):
            raise ValueError(f"{int8}: no accepted int8 graph for these weights; make one with "
                             f"`unetkit export RUN --int8`")
        graph = {"torch": None, "onnx": weights / GRAPH_NAME, "int8": int8}[requested]
        return BackendChoice(requested, graph, f"--backend {requested}")
    if device != "cpu":
        return BackendChoice("torch", None, f"auto: torch on {device}")
    if not onnxruntime_installed():
        return BackendChoice("torch", None, "auto: torch (ONNX Runtime is not installed: pip install 'unetkit[onnx]')")
    if graph_matches(int8, weights):
        return BackendChoice("int8", int8, "auto: the run's accepted int8 graph")
    kind = cpu_kind()
    if cpu_supports_bf16():
        return BackendChoice("torch", None, f"auto: torch, bf16 is native on this {kind} CPU")
    if kind in ONNX_FASTER:
        return BackendChoice("onnx", weights / GRAPH_NAME,
                             f"auto: measured faster than torch's fp32 fast path on this {kind} CPU")
    return BackendChoice("torch", None, f"auto: torch (ONNX Runtime not measured faster on this {kind} CPU)")


def onnxruntime_installed() -> bool:
    """Whether ONNX Runtime and the ONNX exporter's packages can be imported."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


def graph_matches(graph: Path, weights: Path) -> bool:
    """Whether ``graph`` exists with an export report (``<graph>.json``) naming these weights and this unetkit."""
    from unetkit._version import __version__
    from unetkit.models.base import WEIGHTS_NAME
    from unetkit.runtime.onnx_export import file_sha256

    report = graph.with_name(graph.name + ".json")
    if not graph.is_file() or not report.is_file():
        return False
    try:  # a report that cannot be read as one makes the graph stale, never an error
        facts = load_json_limited(report, what="ONNX export report", max_bytes=4 * MiB)
    except UntrustedFileError:
        return False
    if not isinstance(facts, dict) or facts.get("unetkit_version") != __version__:
        return False
    return facts.get("weights_sha256") == file_sha256(weights / WEIGHTS_NAME)


def cached_graph(weights: Path, *, export: Callable[[Path], object]) -> Path:
    """``weights/model.onnx``, exported with ``export(path)`` first unless it matches the weights already.

    Raises:
        OSError: the checkpoint folder is not writable (the caller falls back to torch).
    """
    graph = weights / GRAPH_NAME
    if graph_matches(graph, weights):
        return graph
    if not os.access(weights, os.W_OK):
        raise PermissionError(f"{weights}: not writable, cannot cache the ONNX graph there")
    export(graph)
    return graph
