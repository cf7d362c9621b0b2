"""Folder prediction speed: the one-file-at-a-time loop vs the threaded pipeline (reads ahead, writes behind),
with and without batching same-shape images, on >= 200 ISBI-sized images.

Folder: ``--images`` distinct 512 x 512 uint8 PNGs made from the 30 real ISBI 2012 EM slices, each slice under
the 8 rotations / flips of the square (240 images); beyond 240 the images are also rolled by a multiple of
37 pixels. Run: ``make_plan``'s U-Net for 1-channel 512 x 512 binary images (plain encoder, batch norm,
``--width``), untrained but with calibrated batch-norm statistics, tile 512 (one tile per image), overlap 0.5,
batch 4, TTA ``--tta``, precision ``--precision`` (default ``auto``: bf16 where the CPU has it natively).

Contenders, each writing the default outputs (mask PNG + overlay PNG) into its own folder through the library
(:func:`unetkit.infer.pipeline.predict_sequential` / :func:`~unetkit.infer.pipeline.predict_files`, what
``unetkit predict`` runs, without its start-up):

* ``sequential``: read, predict, write, one file after the other (``unetkit predict --sequential``);
* ``pipeline``: reader / writer threads around the network (the default of ``unetkit predict``);
* ``pipeline_batched``: the same with ``batch_images`` (``--batch-images``): 4 images per network call.

Each contender runs once to warm up (oneDNN primitive caches) on a few images, then ``--repeats`` rounds
interleave the contenders (the order rotates each round; the machine is shared, so ratios are medians of
per-round ratios). Afterwards the outputs are compared: ``pipeline`` must be byte-identical to ``sequential``;
for ``pipeline_batched`` the number of differing files and mask pixels is reported (the network's last float
bits may differ with the batch size).

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/bench_folder.py [--images 200] [--repeats 3] [--width 16]
        [--threads N] [--io-threads 2] [--tta none] [--precision auto] [--out benchmarks/results/folder.json]

Writes ``benchmarks/results/folder.json`` (or ``--out``) with the CPU flags and prints it.
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
RESULT = ROOT / "benchmarks" / "results" / "folder.json"
SIZE = 512
CONTENDERS = ("sequential", "pipeline", "pipeline_batched")


def make_folder(folder: Path, count: int) -> list[Path]:
    """``count`` distinct 512 x 512 PNGs: ISBI slice ``i % 30`` under D4 transform ``(i // 30) % 8``, rolled
    by ``37 * (i // 240)`` pixels."""
    from PIL import Image

    slices = [np.asarray(Image.open(ISBI / f"{i}.png")) for i in range(30)]
    if any(s.shape != (SIZE, SIZE) for s in slices):
        raise SystemExit(f"expected 30 ISBI slices of {SIZE} x {SIZE} under {ISBI}")
    folder.mkdir(parents=True, exist_ok=True)
    paths, seen = [], set()
    for i in range(count):
        transform = (i // 30) % 8
        image = np.rot90(slices[i % 30], k=transform % 4)
        image = image[:, ::-1] if transform >= 4 else image
        image = np.roll(image, 37 * (i // 240), axis=(0, 1))
        seen.add(hash(image.tobytes()))
        path = folder / f"isbi_{i:04d}.png"
        Image.fromarray(np.ascontiguousarray(image)).save(path)
        paths.append(path)
    if len(seen) != count:
        raise SystemExit(f"only {len(seen)} of the {count} images are distinct")
    return paths


def make_run(run: Path, *, width: int, tta: str, precision: str) -> Path:
    """A run folder with ``make_plan``'s model for 1-channel 512 x 512 binary images (calibrated batch norm)."""
    import torch

    import unetkit
    from unetkit.config import InferConfig
    from unetkit.data.fingerprint import DataFingerprint, SizeSpread
    from unetkit.data.options import DataConfig
    from unetkit.train.plan import make_plan

    fingerprint = DataFingerprint(spatial_dims=[2], channels=[1], sizes=SizeSpread(median=[SIZE, SIZE]))
    plan = make_plan(DataConfig(in_channels=1, classes=["background", "membrane"], task="binary"), fingerprint,
                     pretrained=False)
    plan.model.kwargs["width"] = width
    plan.infer = InferConfig(tile_size=[SIZE, SIZE], overlap=0.5, tta=tta, batch_size=4, precision=precision)
    torch.manual_seed(0)
    model = unetkit.create_model(plan.model.name, **plan.model.kwargs)
    model.train()
    with torch.no_grad():  # running statistics, so that folding batch norm does real work
        for _ in range(2):
            model(torch.randn(2, 1, 64, 64) * 2 + 0.5)
    run.mkdir(parents=True, exist_ok=True)
    plan.save(run / "plan.yaml")
    model.eval().save_pretrained(run / "best")
    return run


Contender = Callable[[list[Path]], float]


def contenders(predictor, work: Path, *, io_threads: int) -> dict[str, Contender]:  # type: ignore[no-untyped-def]
    """Each contender predicts a list of files into ``work/<name>`` and returns the seconds it took."""
    from unetkit.infer.pipeline import PipelineOptions, plan_jobs, predict_files, predict_sequential

    def timed(name: str, run: Callable) -> Contender:  # type: ignore[type-arg]
        def go(inputs: list[Path]) -> float:
            out = work / name
            out.mkdir(exist_ok=True)
            jobs = plan_jobs(inputs, out, prob=False, uncertainty=False, overlay=True)
            start = time.perf_counter()
            failed = [o for o in run(predictor, jobs) if o.error is not None]
            seconds = time.perf_counter() - start
            if failed:
                raise SystemExit(f"{name}: {failed[0].path}: {failed[0].error}")
            return seconds

        return go

    plain = PipelineOptions(readers=io_threads, writers=io_threads)
    batched = PipelineOptions(readers=io_threads, writers=io_threads, batch_images=True)
    return {
        "sequential": timed("sequential", predict_sequential),
        "pipeline": timed("pipeline", lambda p, jobs: predict_files(p, jobs, options=plain)),
        "pipeline_batched": timed("pipeline_batched", lambda p, jobs: predict_files(p, jobs, options=batched)),
    }


def interleaved(runs: dict[str, Contender], files: list[Path], *, repeats: int,
                warmup: int) -> dict[str, list[float]]:
    """Seconds per contender and round; round ``r`` runs the contenders in an order rotated by ``r``."""
    for go in runs.values():
        go(files[:warmup])
    names = list(runs)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            times[name].append(runs[name](files))
        print(f"round {r + 1}/{repeats}: " + ", ".join(f"{n} {len(files) / t[-1]:.2f} img/s" for n, t in times.items()),
              flush=True)
    return times


def compare_outputs(work: Path, files: list[Path]) -> dict[str, dict[str, int | bool]]:
    """Per contender against ``sequential``: files that differ in bytes, and mask pixels that differ."""
    from unetkit.data.io import read_image

    reference = work / "sequential"
    report: dict[str, dict[str, int | bool]] = {}
    for name in CONTENDERS[1:]:
        names = sorted(p.name for p in reference.iterdir())
        if sorted(p.name for p in (work / name).iterdir()) != names:
            report[name] = {"identical": False, "same_file_names": False}
            continue
        differing = [n for n in names if (work / name / n).read_bytes() != (reference / n).read_bytes()]
        pixels = sum(int((read_image(work / name / f"{p.stem}.png").array != read_image(reference / f"{p.stem}.png")
                          .array).sum()) for p in files)
        report[name] = {"identical": not differing, "same_file_names": True, "files_differing": len(differing),
                        "mask_pixels_differing": pixels}
    return report


def summary(times: dict[str, list[float]], images: int) -> dict[str, dict[str, float]]:
    base = times["sequential"]
    return {
        name: {
            "median_s": round(statistics.median(t), 3),
            "images_per_s": round(images / statistics.median(t), 3),
            "images_per_s_vs_sequential": round(statistics.median(b / a for a, b in zip(t, base, strict=True)), 3),
            "rounds_s": [round(x, 3) for x in t],
        }
        for name, t in times.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=4, help="images per contender before timing")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--io-threads", type=int, default=2, help="pipeline reader threads, and as many writers")
    parser.add_argument("--tta", default="none", choices=("none", "flips", "d4"))
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    import torch

    from unetkit.infer.predictor import Predictor
    from unetkit.precision import cpu_flags

    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    report: dict = {
        "what": "folder prediction, 512x512 ISBI-derived PNGs, mask + overlay outputs; medians of interleaved rounds",
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "cpu_flags": cpu_flags(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "load_avg_start": os.getloadavg()},
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
    }
    with tempfile.TemporaryDirectory(prefix="unetkit_bench_folder_") as tmp:
        work = Path(tmp)
        files = make_folder(work / "in", args.images)
        predictor = Predictor.from_run(make_run(work / "run", width=args.width, tta=args.tta,
                                                precision=args.precision))
        report["settings"]["precision_used"] = predictor.precision.describe()
        runs = contenders(predictor, work, io_threads=args.io_threads)
        times = interleaved(runs, files, repeats=args.repeats, warmup=args.warmup)
        report["results"] = summary(times, len(files))
        report["outputs_vs_sequential"] = compare_outputs(work, files)
    report["machine"]["load_avg_end"] = os.getloadavg()
    report["total_s"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    if not report["outputs_vs_sequential"]["pipeline"]["identical"]:
        raise SystemExit("pipeline outputs differ from the sequential loop's")


if __name__ == "__main__":
    main()
