"""``unetkit doctor``: what this machine is and what ``auto`` chooses on it, to paste into a bug report.

It composes the precision rule (:mod:`unetkit.precision`) and the backend rule (:mod:`unetkit.infer.backend`);
with ``measure=True`` it also times each choice on a small default-plan network, so a report shows the speeds the
rules were chosen for, measured on the machine that reports.

Example:
    >>> report = diagnose(run=None, measure=False)
    >>> report["cpu"]["kind"], report["training"]["precision"]
    ('x86-avx2', 'fp32')
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import time
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "onnxruntime", "onnx", "timm", "numpy")


def diagnose(*, run: Path | None, measure: bool) -> dict[str, Any]:
    """Versions, device, CPU kind and flags, and the training and inference choices of ``auto`` with their reasons.

    Args:
        run: a run (or checkpoint) folder whose inference backend to report; None: the rule for a run without
            exported graphs.
        measure: also time each precision, layout and backend here (:func:`measure_choices`, ~1 minute).

    Raises:
        FileNotFoundError: ``run`` is not a run or checkpoint folder.
    """
    import torch

    from unetkit._version import __version__
    from unetkit.infer.backend import choose_backend
    from unetkit.precision import choose_precision, cpu_flags, cpu_kind, resolve_device

    device = resolve_device("auto")
    train = choose_precision("auto", torch.device(device), spatial_dims=2, inference=False)
    infer = choose_precision("auto", torch.device(device), spatial_dims=2, inference=True)
    weights = _weights(run) if run is not None else Path("(no run)")
    backend = choose_backend(weights, requested="auto", device=device)
    report: dict[str, Any] = {
        "unetkit": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in PACKAGES},
        "onednn": _onednn_version(torch),
        "device": device,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu": {"model": _cpu_model(), "kind": cpu_kind(), "flags": [f for f, on in cpu_flags().items() if on],
                "cores": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "training": {"precision": train.name, "layout": _layout(train.layout), "reason": train.reason},
        "inference": {"backend": backend.backend, "backend_reason": backend.reason,
                      "precision": {"torch": infer.name, "onnx": "fp32", "int8": "int8"}[backend.backend],
                      "layout": _layout(infer.layout) if backend.backend == "torch" else "onnxruntime's own",
                      "precision_reason": infer.reason if backend.backend == "torch" else backend.reason},
    }
    if measure:
        report["measured"] = measure_choices()
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report as the lines ``unetkit doctor`` prints."""
    cpu, train, infer = report["cpu"], report["training"], report["inference"]
    packages = ", ".join(f"{k} {v or '-'}" for k, v in report["packages"].items())
    lines = [
        f"unetkit {report['unetkit']}, Python {report['python']}, {report['platform']}",
        f"packages: {packages}; oneDNN {report['onednn'] or '-'}",
        f"device: {report['device']}" + (f" ({report['cuda']})" if report["cuda"] else ""),
        f"cpu: {cpu['model']}; kind {cpu['kind']}; {cpu['cores']} cores, torch threads {cpu['torch_threads']}",
        f"cpu flags: {' '.join(cpu['flags']) or '(none of the tracked flags)'}",
        f"training: {train['precision']}, {train['layout']} ({train['reason']})",
        f"inference: backend {infer['backend']} ({infer['backend_reason']}); {infer['precision']}, "
        f"{infer['layout']}" + ("" if infer["backend"] != "torch" else f" ({infer['precision_reason']})"),
    ]
    for name, row in report.get("measured", {}).items():
        lines.append(f"measured {name}: {row['per_s']:.2f} {row['unit']}/s")
    return "\n".join(lines)


def measure_choices(*, size: int = 256, steps: int = 3) -> dict[str, dict[str, Any]]:
    """Time each choice on the default 2D plan's network (U-Net, EfficientNet-Lite0 encoder, random weights).

    Training: forward + backward + SGD step on a batch of 2 ``size`` x ``size`` patches, for fp32 contiguous, fp32
    channels_last and bf16 channels_last. Inference: one ``2 * size`` square image through the torch fast path
    (fp32, bf16) and ONNX Runtime fp32 when installed. Each is warmed up, then timed over ``steps`` repetitions.
    """
    import torch

    from unetkit.infer.fastpath import fold_batchnorm
    from unetkit.models import create_model
    from unetkit.precision import autocast

    model = create_model("unet", in_channels=1, classes=2, encoder="tf_efficientnet_lite0")
    cpu = torch.device("cpu")
    x = torch.randn(2, 1, size, size)
    y = torch.randint(0, 2, (2, size, size))
    out: dict[str, dict[str, Any]] = {}
    for name, dtype, layout in (("train fp32 contiguous", None, torch.contiguous_format),
                                ("train fp32 channels_last", None, torch.channels_last),
                                ("train bf16 channels_last", torch.bfloat16, torch.channels_last)):
        net = model.to(memory_format=layout).train()
        optimizer = torch.optim.SGD(net.parameters(), lr=1e-3)

        def step(net: Any = net, optimizer: Any = optimizer, dtype: Any = dtype, layout: Any = layout) -> None:
            with autocast(cpu, dtype):
                logits = net(x.contiguous(memory_format=layout))
            loss = torch.nn.functional.cross_entropy(logits.float(), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        out[name] = {"per_s": 1 / _seconds(step, steps), "unit": "steps"}
    image = torch.randn(1, 1, 2 * size, 2 * size)
    fast = fold_batchnorm(model.eval()).to(memory_format=torch.channels_last)
    for name, dtype in (("predict torch fp32", None), ("predict torch bf16", torch.bfloat16)):
        def forward(dtype: Any = dtype) -> None:
            with torch.inference_mode(), autocast(cpu, dtype):
                fast(image.contiguous(memory_format=torch.channels_last))

        out[name] = {"per_s": 1 / _seconds(forward, steps), "unit": "images"}
    ort = _onnx_forward(model, image)
    if ort is not None:
        out["predict onnxruntime fp32"] = {"per_s": 1 / _seconds(ort, steps), "unit": "images"}
    return out


def _onnx_forward(model: Any, image: Any) -> Any:
    """A callable running ``model`` exported to ONNX Runtime on ``image``, or None without ONNX Runtime."""
    import tempfile

    from unetkit.infer.backend import onnxruntime_installed

    if not onnxruntime_installed():
        return None
    from unetkit.infer.onnx_backend import OnnxTileRunner
    from unetkit.runtime.onnx_pipeline import export_pipeline

    with tempfile.TemporaryDirectory(prefix="unetkit_doctor_") as tmp:
        path = Path(tmp) / "model.onnx"
        export_pipeline(model.eval(), path, in_channels=1, tile_size=image.shape[2:])
        runner = OnnxTileRunner(path)
    return lambda: runner(image)


def _seconds(fn: Any, repeats: int) -> float:
    fn()  # warm-up: one-off primitive creation
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - started) / repeats


def _weights(run: Path) -> Path:
    from unetkit.run_layout import is_model_dir, weights_dir

    if is_model_dir(run):
        return run
    weights = weights_dir(run, "best")
    if not weights.is_dir():
        raise FileNotFoundError(f"{run}: not a run folder (no best/ checkpoint)")
    return weights


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _onednn_version(torch: Any) -> str | None:
    match = re.search(r"(?:oneDNN|MKL-DNN) v([\d.]+)", torch.__config__.show())
    return match.group(1) if match else None


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    for line in text.splitlines():
        if line.startswith(("model name", "Model name", "Hardware")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _layout(layout: Any) -> str:
    return "contiguous" if layout is None else str(layout).removeprefix("torch.")
