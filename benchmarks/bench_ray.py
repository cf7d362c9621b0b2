"""Batch prediction on Ray vs the local pipeline: the cost of the engine on one machine.

Folder: the first ``--images`` (default 200) real magnetic-tile photographs of the shared dataset (greyscale JPEGs
of about 250 x 370 pixels, the files themselves). Run: a small untrained U-Net (plain encoder, ``--width``,
depth 3, batch norm), one pass per image (``max_pass_pixels`` = the planner's), the torch backend for every
contender so that only the engine differs. Outputs: the defaults of ``unetkit predict`` (mask + overlay PNG).

Contenders, each predicting the whole folder into its own folder:

* ``local``: :func:`unetkit.infer.pipeline.predict_files` (``unetkit predict`` without Ray: reader / writer
  threads around the network, one compute thread on 2 cores);
* ``ray_1`` / ``ray_2``: :func:`unetkit.infer.ray_engine.ray_pool` with 1 or 2 actors (1 CPU and 1 torch
  thread each) on a Ray instance started once for the benchmark on this machine.

Each contender's time is split into ``start_s`` (local: loading the predictor; Ray: starting the actors, each
loading the run) and ``predict_s`` (the files). Rounds interleave the contenders (the order rotates each
round); medians are reported. The JSON is written after every round, and a re-run with the same settings goes on
from the rounds already there (``--fresh`` starts over). Afterwards every contender's outputs are compared with
``local``'s, byte for byte.

On a 2-core machine Ray cannot show scaling (2 actors and the driver share 2 cores); the numbers measure the
overhead of the engine. Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/bench_ray.py [--images 200] [--repeats 3] [--width 8]
        [--out benchmarks/results/ray.json] [--fresh]
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
MAGNETIC = ROOT.parent / "shared" / "datasets" / "magnetic_tile_defects" / "images"
RESULT = ROOT / "benchmarks" / "results" / "ray.json"
CONTENDERS = ("local", "ray_1", "ray_2")


def make_run(run: Path, *, width: int) -> Path:
    """A 1-channel binary U-Net run folder (plain encoder, calibrated batch norm), one pass per image."""
    import torch

    import unetkit
    from unetkit.config import InferConfig, ModelConfig, Plan
    from unetkit.data.options import DataConfig

    kwargs = {"in_channels": 1, "classes": 2, "spatial_dims": 2, "encoder": "plain", "depth": 3, "width": width,
              "norm": "batch"}
    plan = Plan(data=DataConfig(in_channels=1, spatial_dims=2), model=ModelConfig(name="unet", kwargs=kwargs),
                infer=InferConfig(tile_size=[256, 256], overlap=0.25, batch_size=2, max_pass_pixels=None))
    torch.manual_seed(0)
    model = unetkit.create_model("unet", **kwargs)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(2, 1, 64, 64) * 2 + 0.5)
    run.mkdir(parents=True, exist_ok=True)
    plan.save(run / "plan.yaml")
    model.eval().save_pretrained(run / "best")
    return run


def run_local(run: Path, files: list[Path], out: Path) -> dict[str, float]:
    from unetkit.infer.pipeline import predict_files
    from unetkit.infer.predictor import Predictor

    start = time.perf_counter()
    predictor = Predictor.from_run(run, backend="torch")
    loaded = time.perf_counter()
    _check(predict_files(predictor, _jobs(files, out)))
    return {"start_s": loaded - start, "predict_s": time.perf_counter() - loaded}


def run_ray(run: Path, files: list[Path], out: Path, *, actors: int) -> dict[str, float]:
    from unetkit.infer.ray_engine import PredictorSpec, RayOptions, ray_pool

    start = time.perf_counter()
    with ray_pool(PredictorSpec(runs=(str(run),), backend="torch"), options=RayOptions(actors=actors)) as pool:
        ready = time.perf_counter()
        _check(pool.predict(_jobs(files, out)))
        done = time.perf_counter()
    return {"start_s": ready - start, "predict_s": done - ready}


def _jobs(files: list[Path], out: Path):  # type: ignore[no-untyped-def]
    from unetkit.infer.pipeline import plan_jobs

    out.mkdir(parents=True, exist_ok=True)
    return plan_jobs(files, out, prob=False, uncertainty=False, overlay=True)


def _check(outcomes) -> None:  # type: ignore[no-untyped-def]
    failed = [o for o in outcomes if o.error is not None]
    if failed:
        raise SystemExit(f"{failed[0].path}: {failed[0].error}")


def identical_to_local(work: Path) -> dict[str, bool]:
    reference = {p.name: p.read_bytes() for p in (work / "local").iterdir()}
    return {name: {p.name: p.read_bytes() for p in (work / name).iterdir()} == reference for name in CONTENDERS[1:]}


def summary(rounds: list[dict[str, dict[str, float]]], images: int) -> dict[str, dict[str, float]]:
    result = {}
    for name in CONTENDERS:
        start = [r[name]["start_s"] for r in rounds]
        predict = [r[name]["predict_s"] for r in rounds]
        total = [a + b for a, b in zip(start, predict, strict=True)]
        result[name] = {"start_s": round(statistics.median(start), 2), "predict_s": round(statistics.median(predict), 2),
                        "images_per_s": round(images / statistics.median(predict), 2),
                        "total_s": round(statistics.median(total), 2)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument("--fresh", action="store_true", help="ignore the rounds already in --out")
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # the benchmark's process, not the library
    import ray
    import torch

    from unetkit.precision import cpu_flags

    settings = {"images": args.images, "width": args.width, "backend": "torch", "outputs": "mask+overlay"}
    report = json.loads(args.out.read_text()) if args.out.is_file() and not args.fresh else {}
    if report.get("settings") != settings:
        report = {"settings": settings, "rounds": []}
    report["what"] = "local pipeline vs Ray actors, real magnetic-tile JPEGs, medians of interleaved rounds"
    report["machine"] = {"cpus": os.cpu_count(), "cpu_flags": cpu_flags(), "python": platform.python_version(),
                         "torch": torch.__version__, "ray": ray.__version__, "load_avg_start": os.getloadavg()}
    files = sorted(MAGNETIC.rglob("*.jpg"))[: args.images]
    if len(files) < args.images:
        raise SystemExit(f"only {len(files)} images under {MAGNETIC}")
    started = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    report["ray_init_s"] = round(time.perf_counter() - started, 2)
    with tempfile.TemporaryDirectory(prefix="unetkit_bench_ray_") as tmp:
        work = Path(tmp)
        run = make_run(work / "run", width=args.width)
        go = {"local": lambda out: run_local(run, files, out),
              "ray_1": lambda out: run_ray(run, files, out, actors=1),
              "ray_2": lambda out: run_ray(run, files, out, actors=2)}
        for r in range(len(report["rounds"]), args.repeats):
            order = CONTENDERS[r % 3:] + CONTENDERS[: r % 3]
            times = {name: go[name](work / f"round{r}" / name) for name in order}
            report["rounds"].append({n: {k: round(v, 3) for k, v in t.items()} for n, t in times.items()})
            print(f"round {r + 1}/{args.repeats}: " + ", ".join(
                f"{n} start {t['start_s']:.1f} s + {t['predict_s']:.1f} s" for n, t in times.items()), flush=True)
            report["identical_to_local"] = identical_to_local(work / f"round{r}")
            _save(args.out, report)
    ray.shutdown()
    report["results"] = summary(report["rounds"], len(files))
    report["machine"]["load_avg_end"] = os.getloadavg()
    _save(args.out, report)
    print(json.dumps({k: report[k] for k in ("results", "identical_to_local", "ray_init_s")}, indent=2))
    for name, row in report["results"].items():
        print(f"| {name} | {row['start_s']} | {row['predict_s']} | {row['images_per_s']} | {row['total_s']} |")


def _save(path: Path, report: dict) -> None:  # type: ignore[type-arg]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
