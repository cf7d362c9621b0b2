"""Deployment on the CPU at 512 x 512: every way unetkit runs a trained model, against smp, in one interleaved run.

For each trained run given (``--run`` for the default plan, i.e. the ImageNet EfficientNet-Lite0 encoder;
``--run-plain`` for a plain-encoder plan), on real 512 x 512 ISBI 2012 slices (1 channel):

* ``export``: ``unetkit export``'s fp32 graph (seconds, max |ONNX Runtime - PyTorch|) and its int8 graph
  (:func:`unetkit.quantize.quantize_run`: static QDQ calibrated on the run's training images; seconds, and the
  validation Dice of fp32 and int8 from the same call, the threshold set so that it never refuses here).
* ``per_image``: a whole ``Predictor`` call per raw image (normalise, one 512 tile, probabilities, labels), no
  TTA, for: ``unetkit_predict_default`` (``Predictor.from_run(run, backend="auto")``, exactly what ``unetkit
  predict RUN IMAGE.png --tta none`` runs; it uses the run's own cached graphs, see unetkit.infer.backend),
  ``torch_fast`` (BN folded + channels_last, ``precision auto``: bf16 where the CPU has it natively),
  ``torch_fast_fp32`` (the same in fp32), ``torch_eager_fp32`` (plain eager), ``onnxruntime_fp32``,
  ``onnxruntime_int8``, and ``smp_unet_resnet34_eager_fp32`` (segmentation_models_pytorch ``Unet("resnet34")``,
  untrained: speed does not depend on the weights; the same z-scored image, forward + softmax + argmax).
  Contenders are interleaved round by round (order rotated), each timed over ``--images`` images per round;
  reported: median seconds per image over rounds, images/s, and ratios (medians of per-round ratios) against
  eager fp32, ONNX Runtime fp32 and smp.
* ``folder`` (``--folder-images N``, default 200): ``benchmarks/bench_folder.py`` in a subprocess (sequential
  loop vs reader/writer pipeline on N ISBI-derived images), its JSON embedded.

The CPU flags (avx2, avx512f, avx512_bf16, avx512_vnni, avx_vnni, amx_bf16, amx_int8) are recorded: never
compare figures across machines. Run it alone (2 cores: anything beside it ruins its numbers).

Usage (two short trainings make the runs)::

    unetkit train ISBI_TRAIN.csv --out runs/isbi --value-map 0:1,255:0 --time-budget 4m
    unetkit train ISBI_TRAIN.csv --out runs/isbi_plain --value-map 0:1,255:0 --time-budget 4m --encoder plain
    PYTHONPATH=src .venv/bin/python benchmarks/bench_deploy.py --run runs/isbi --run-plain runs/isbi_plain

Writes ``benchmarks/results/deploy.json`` and ``deploy.md`` and prints the markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
ISBI = ROOT.parent / "shared" / "datasets" / "isbi2012_em_membrane"
RESULTS = ROOT / "benchmarks" / "results"


def isbi_images(count: int) -> list[np.ndarray]:
    """The first ``count`` unlabelled ISBI test slices (never seen in training), (1, 512, 512) uint8."""
    from unetkit.data.io import read_image

    files = sorted((ISBI / "test_images_unlabeled").glob("*.png"), key=lambda p: int(p.stem))[:count]
    if len(files) < count:
        raise SystemExit(f"expected {count} slices under {ISBI / 'test_images_unlabeled'}, found {len(files)}")
    return [read_image(f).array for f in files]


def export_both(run: Path, tmp: Path) -> tuple[Path, Path, dict]:
    """fp32 graph as ``unetkit export`` writes it, then the int8 graph; their times and checks."""
    from unetkit.config import Plan
    from unetkit.infer.predictor import onnx_labeller
    from unetkit.models.base import load_model
    from unetkit.quantize import quantize_run
    from unetkit.runtime.onnx_pipeline import export_pipeline

    plan = Plan.load(run / "plan.yaml")
    tile = [int(t) for t in plan.infer.tile_size]
    odd = [(t // 32 + 1) * 32 + 17 for t in tile]
    fp32, int8 = tmp / f"{run.name}.onnx", tmp / f"{run.name}.int8.onnx"
    started = time.perf_counter()
    exported = export_pipeline(load_model(run / "best"), fp32, in_channels=int(plan.data.in_channels),
                               tile_size=tile, check_sizes=[tile, odd])
    export_s = time.perf_counter() - started
    started = time.perf_counter()
    result = quantize_run(run, fp32, int8, labeller=onnx_labeller, checkpoint="best", calibration_patches=32, max_drop=1.0)
    quant_s = time.perf_counter() - started
    return fp32, int8, {
        "fp32_export_s": round(export_s, 1),
        "fp32_max_abs_diff": exported.max_abs_diff,
        "int8_quantize_and_validate_s": round(quant_s, 1),
        "validation": {k: getattr(result, k) for k in ("metric", "dice_fp32", "dice_int8", "drop", "validation_images")},
        "validation_images_per_s": result.images_per_s,
    }


def contenders(run: Path, fp32: Path, int8: Path) -> dict[str, Callable[[np.ndarray], object]]:
    """name -> f(raw image): the whole prediction of one image."""
    import segmentation_models_pytorch as smp
    import torch

    from unetkit.data.normalize import normalize_for
    from unetkit.infer.predictor import Predictor

    def predictor(**kw: object) -> Callable[[np.ndarray], object]:
        return Predictor.from_run(run, tta="none", tile_size=[512, 512], **kw)  # type: ignore[arg-type]

    torch.manual_seed(0)
    reference = smp.Unet("resnet34", encoder_weights=None, in_channels=1, classes=2).eval()
    plan = predictor().plan  # type: ignore[attr-defined]

    def smp_call(image: np.ndarray) -> object:
        x = torch.from_numpy(normalize_for(image, plan.data))[None]
        with torch.inference_mode():
            return torch.softmax(reference(x), dim=1)[0].argmax(0).numpy()

    return {
        # What `unetkit predict RUN IMAGE.png --tta none` runs: backend auto (the run's accepted int8 graph, ONNX
        # Runtime where measured faster, else torch), the speed tiling (one pass up to 1024 x 1024).
        "unetkit_predict_default": Predictor.from_run(run, backend="auto", tta="none"),
        "torch_fast": predictor(),
        "torch_fast_fp32": predictor(precision="fp32"),
        "torch_eager_fp32": predictor(fast=False),
        "onnxruntime_fp32": predictor(backend="onnx", onnx_path=fp32),
        "onnxruntime_int8": predictor(backend="onnx", onnx_path=int8),
        "smp_unet_resnet34_eager_fp32": smp_call,
    }


def timed_rounds(fns: dict[str, Callable[[np.ndarray], object]], images: list[np.ndarray], *,
                 rounds: int) -> dict[str, list[float]]:
    """Seconds per image of each contender in each round; order rotated every round; one warm-up call each."""
    for fn in fns.values():
        fn(images[0])
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            started = time.perf_counter()
            for image in images:
                fns[name](image)
            times[name].append((time.perf_counter() - started) / len(images))
    return times


def summarise(times: dict[str, list[float]]) -> dict:
    def ratio(a: str, b: str) -> float:
        return round(statistics.median(y / x for x, y in zip(times[a], times[b], strict=True)), 3)

    out: dict = {name: {"s_per_image": round(statistics.median(t), 4),
                        "images_per_s": round(1 / statistics.median(t), 2)} for name, t in times.items()}
    for name in times:
        out[name]["speedup_vs_eager_fp32"] = ratio(name, "torch_eager_fp32")
        out[name]["speedup_vs_onnxruntime_fp32"] = ratio(name, "onnxruntime_fp32")
        out[name]["speedup_vs_smp"] = ratio(name, "smp_unet_resnet34_eager_fp32")
    return out


def folder(count: int, tmp: Path) -> dict:
    out = tmp / "folder.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "bench_folder.py"), "--images", str(count), "--out", str(out)]
    subprocess.run(command, check=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    return json.loads(out.read_text())


def markdown(report: dict) -> str:
    lines = [f"# Deployment benchmark ({report['machine']['cpu_model']})", "",
             "CPU flags: " + ", ".join(f for f, on in report["machine"]["cpu_flags"].items() if on), ""]
    for label, part in report["plans"].items():
        ex = part["export"]
        val = ex["validation"]
        lines += [f"## {label} plan ({part['encoder']})", "",
                  f"export fp32 {ex['fp32_export_s']} s (max diff {max(ex['fp32_max_abs_diff'].values()):.2g}); "
                  f"int8 quantise + validate {ex['int8_quantize_and_validate_s']} s; validation {val['metric']} "
                  f"fp32 {val['dice_fp32']:.4f}, int8 {val['dice_int8']:.4f} (drop {val['drop']:.4f})", "",
                  "| contender | s / image | images/s | vs eager fp32 | vs ORT fp32 | vs smp |", "|---|---|---|---|---|---|"]
        for name, row in part["per_image"].items():
            lines.append(f"| {name} | {row['s_per_image']} | {row['images_per_s']} | {row['speedup_vs_eager_fp32']}x | "
                         f"{row['speedup_vs_onnxruntime_fp32']}x | {row['speedup_vs_smp']}x |")
        lines.append("")
    if "folder" in report:
        lines += ["## Folder", "", "```", json.dumps({k: report["folder"].get(k) for k in ("results", "outputs_vs_sequential")}, indent=1), "```"]
    return "\n".join(lines) + "\n"


def main() -> None:
    import torch

    from unetkit.precision import cpu_flags

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a default-plan run (Lite0 encoder)")
    parser.add_argument("--run-plain", type=Path, default=None, help="a plain-encoder run")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--images", type=int, default=6, help="images per contender per round")
    parser.add_argument("--folder-images", type=int, default=200, help="0 skips the folder benchmark")
    args = parser.parse_args()
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")), "?")
    report: dict = {"machine": {"cpu_model": model, "cpus": os.cpu_count(), "cpu_flags": cpu_flags(),
                                "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                                "python": platform.python_version(), "load_avg_start": os.getloadavg()},
                    "rounds": args.rounds, "images_per_round": args.images, "plans": {}}
    images = isbi_images(args.images)
    with tempfile.TemporaryDirectory(prefix="unetkit_bench_deploy_") as tmp:
        for label, run in (("default", args.run), ("plain", args.run_plain)):
            if run is None:
                continue
            from unetkit.config import Plan
            from unetkit.runtime.run import encoder_name

            print(f"{label}: export + int8", flush=True)
            fp32, int8, exported = export_both(run, Path(tmp))
            print(f"{label}: timing", flush=True)
            times = timed_rounds(contenders(run, fp32, int8), images, rounds=args.rounds)
            report["plans"][label] = {"run": str(run), "encoder": encoder_name(Plan.load(run / "plan.yaml")), "export": exported, "per_image": summarise(times)}
        if args.folder_images:
            print("folder", flush=True)
            report["folder"] = folder(args.folder_images, Path(tmp))
    report["machine"]["load_avg_end"] = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "deploy.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (RESULTS / "deploy.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
