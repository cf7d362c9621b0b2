"""Inference speed at 512 x 512 on the CPU: unetkit's fast path vs plain eager vs a reference U-Net, and TTA cost.

Images: real ISBI 2012 EM slices (1 x 512 x 512, uint8). Models (untrained; speed does not depend on the
weights, but the batch norms get non-trivial statistics so that folding does real work):

* ``unetkit`` default U-Net (``make_plan``'s model: plain encoder, depth 4, batch norm; width 32 as on a GPU
  plan, and width 16, what ``make_plan`` now picks on a CPU), 1 input channel, 2 classes.
* ``smp.Unet("resnet34")`` from segmentation_models_pytorch, eager fp32, 1 input channel, 2 classes.

Two levels are timed, contenders interleaved round by round (the machine is shared; the median of the
rounds is reported, and ratios are medians of per-round ratios):

* ``network``: one forward pass of a ``(1, 1, 512, 512)`` batch (+ softmax), no_grad/inference mode:
  unetkit fast path (BN folded + channels_last, fp32: this CPU has no native bf16), the same network in
  plain eager fp32, ONNX Runtime on the exported graph (``unetkit export``'s pipeline: network + softmax),
  and smp Unet(resnet34) eager.
* ``predictor``: the whole ``Predictor`` call on a raw image (normalise, tile 512 = one tile, softmax,
  labels), fast vs plain vs ONNX backend; and TTA levels none / flips / d4 on the fast path, as the cost
  per image relative to none.

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/bench_predict.py [--rounds 5] [--widths 32 16]

Writes ``benchmarks/results/predict.json`` and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
ISBI = ROOT.parent / "shared" / "datasets" / "isbi2012_em_membrane" / "images"
RESULT = ROOT / "benchmarks" / "results" / "predict.json"
SIZE = 512


def images(count: int) -> list[np.ndarray]:
    from unetkit.data.io import read_image

    files = sorted(ISBI.glob("*.png"))[:count]
    if not files:
        raise SystemExit(f"ISBI images not found under {ISBI}")
    return [read_image(f).array for f in files]


def default_plan(width: int):  # type: ignore[no-untyped-def]
    """``make_plan`` for 1-channel 512 x 512 binary images, with the given width and one 512 tile."""
    from unetkit.config import InferConfig
    from unetkit.data.fingerprint import DataFingerprint, SizeSpread
    from unetkit.data.options import DataConfig
    from unetkit.train.plan import make_plan

    fingerprint = DataFingerprint(spatial_dims=[2], channels=[1], sizes=SizeSpread(median=[SIZE, SIZE]))
    plan = make_plan(DataConfig(in_channels=1, classes=["background", "membrane"], task="binary"), fingerprint, pretrained=False)
    plan.model.kwargs["width"] = width
    plan.infer = InferConfig(tile_size=[SIZE, SIZE], overlap=0.5, tta="none", batch_size=4)
    return plan


def calibrated_model(plan):  # type: ignore[no-untyped-def]
    """The plan's model with running statistics from a few train-mode passes (so BN folding is not trivial)."""
    import torch

    import unetkit

    torch.manual_seed(0)
    model = unetkit.create_model(plan.model.name, **plan.model.kwargs)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(2, plan.model.kwargs["in_channels"], 64, 64) * 2 + 0.5)
    return model.eval()


def timed_rounds(contenders: dict[str, Callable[[int], object]], *, rounds: int, inputs: int) -> dict[str, list[float]]:
    """Seconds per call for each contender, interleaved: round r calls every contender once on input r % n."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for fn in contenders.values():  # warm-up (allocations, oneDNN primitive caches, ORT arenas)
        fn(0)
    for r in range(rounds):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn(r % inputs)
            times[name].append(time.perf_counter() - start)
        print(f"round {r + 1}/{rounds}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()), flush=True)
    return times


def summary(times: dict[str, list[float]], reference: str) -> dict[str, dict[str, float]]:
    """Medians per contender; the ratio to ``reference`` is the median of per-round ratios (robust to the
    load of a shared machine changing between rounds, since each round runs every contender back to back)."""
    return {
        name: {
            "median_s": round(statistics.median(t), 4),
            "min_s": round(min(t), 4),
            "images_per_s": round(1.0 / statistics.median(t), 3),
            f"time_vs_{reference}": round(statistics.median(a / b for a, b in zip(t, times[reference], strict=True)), 3),
        }
        for name, t in times.items()
    }


def network_contenders(model, onnx_path: Path, batches: list) -> dict[str, Callable[[int], object]]:  # type: ignore[no-untyped-def]
    import segmentation_models_pytorch as smp
    import torch

    from unetkit.infer.fastpath import prepare_for_inference
    from unetkit.infer.onnx_backend import OnnxTileRunner

    fast, choice = prepare_for_inference(model, spatial_dims=2, fast=True, device=torch.device("cpu"), precision="fp32")
    layout = choice.layout
    torch.manual_seed(0)
    reference = smp.Unet("resnet34", encoder_weights=None, in_channels=1, classes=2).eval()
    runner = OnnxTileRunner(onnx_path)

    def torch_fn(net, channels_last: bool):  # type: ignore[no-untyped-def]
        def call(i: int) -> object:
            x = batches[i].contiguous(memory_format=layout) if channels_last else batches[i]
            with torch.inference_mode():
                return torch.softmax(net(x), dim=1)

        return call

    return {
        "unetkit_fast": torch_fn(fast, True),
        "unetkit_plain_eager": torch_fn(model, False),
        "unetkit_onnxruntime": lambda i: runner(batches[i]),
        "smp_unet_resnet34_eager": torch_fn(reference, False),
    }


def bench_width(width: int, *, rounds: int, raw: list[np.ndarray], tmp: Path, tta_rounds: int) -> dict:
    import torch

    from unetkit.data.normalize import normalize
    from unetkit.infer.predictor import Predictor
    from unetkit.runtime.onnx_pipeline import export_pipeline

    plan = default_plan(width)
    model = calibrated_model(plan)
    onnx_path = tmp / f"unet_w{width}.onnx"
    start = time.perf_counter()
    exported = export_pipeline(model, onnx_path, in_channels=1, tile_size=[SIZE, SIZE])
    export_s = time.perf_counter() - start
    batches = [torch.from_numpy(normalize(image))[None] for image in raw]
    print(f"width {width}: network", flush=True)
    network = timed_rounds(network_contenders(model, onnx_path, batches), rounds=rounds, inputs=len(raw))
    predictors = {
        "fast": Predictor(model, plan, fast=True),
        "plain_eager": Predictor(model, plan, fast=False),
        "onnxruntime": Predictor(model, plan, backend="onnx", onnx_path=onnx_path),
    }
    print(f"width {width}: predictor", flush=True)
    pipeline = timed_rounds({k: (lambda i, p=p: p(raw[i])) for k, p in predictors.items()}, rounds=rounds,
                            inputs=len(raw))
    result = {
        "model": plan.model.kwargs,
        "onnx_export": {"seconds": round(export_s, 1), "max_abs_diff": exported.max_abs_diff},
        "network_batch1": summary(network, "unetkit_plain_eager"),
        "predictor_per_image": summary(pipeline, "plain_eager"),
    }
    if tta_rounds:
        from unetkit.config import InferConfig

        levels = {level: Predictor(model, plan, fast=True, infer=InferConfig(**{**plan.infer.__dict__, "tta": level}))
                  for level in ("none", "flips", "d4")}
        print(f"width {width}: TTA", flush=True)
        tta = timed_rounds({k: (lambda i, p=p: p(raw[i])) for k, p in levels.items()}, rounds=tta_rounds,
                           inputs=len(raw))
        result["tta_fast_path_per_image"] = summary(tta, "none")
    return result


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tta-rounds", type=int, default=3)
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 16])
    args = parser.parse_args()
    from unetkit.precision import cpu_supports_bf16

    started = time.perf_counter()
    raw = images(max(args.rounds, args.tta_rounds))
    report: dict = {
        "what": "CPU inference speed at 512x512 (1 channel, 2 classes); medians of interleaved rounds",
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "native_bf16": cpu_supports_bf16(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "load_avg_start": os.getloadavg(),
        },
        "rounds": args.rounds,
        "widths": {},
    }
    with tempfile.TemporaryDirectory(prefix="unetkit_bench_predict_") as tmp:
        for i, width in enumerate(args.widths):
            report["widths"][str(width)] = bench_width(width, rounds=args.rounds, raw=raw, tmp=Path(tmp),
                                                       tta_rounds=args.tta_rounds if i == 0 else 0)
    report["machine"]["load_avg_end"] = os.getloadavg()
    report["total_s"] = round(time.perf_counter() - started, 1)
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
