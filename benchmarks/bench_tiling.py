"""Peak memory of ``unetkit predict`` on huge GeoTIFFs: the windowed path must not grow with the raster.

For each size (2k x 2k, 8k x 8k, 16k x 16k by default) a 3-band uint8 GeoTIFF (EPSG:32640, tiled 512,
uncompressed) is filled with 512 x 512 tiles cut from the real Dubai aerial JPEGs and written window by
window with :class:`unetkit.data.geotiff.GeoTiffWriter`. Then ``python -m unetkit.cli predict RUN raster.tif
--out DIR --windowed --no-overlay`` runs in its own process and its peak RSS is read from ``os.wait4``
(that child's own ``ru_maxrss``). The run is a tiny untrained U-Net (width 4, depth 2, batch norm; tile 512,
overlap 0.25, batch 4): prediction quality is irrelevant here, memory is the point. An "imports only"
process gives the fixed cost of Python + torch + rasterio + unetkit, and the 2k raster is also predicted
in memory (no ``--windowed``) for reference.

Time: the 2k run gives seconds per predicted tile; each larger size is run only if its estimate fits in
what is left of ``--budget-s`` (default 540 s), otherwise it is reported as skipped with the estimate.

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/bench_tiling.py [--sizes 2048 8192 16384] [--budget-s 540]
        [--overlap 0.25] [--out benchmarks/results/tiling.json]

Writes ``benchmarks/results/tiling.json`` (or ``--out``) and prints it. Temporary rasters are deleted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
DUBAI = ROOT.parent / "shared" / "datasets" / "dubai_aerial_landcover" / "images"
RESULT = ROOT / "benchmarks" / "results" / "tiling.json"
TILE = 512
WINDOW = 2048  # unetkit.infer.raster.predict_raster's default window
TRANSFORM = (0.3, 0.0, 500000.0, 0.0, -0.3, 2790000.0)


def source_tiles(count: int = 24) -> np.ndarray:
    """``(count, 3, 512, 512)`` uint8 tiles cut from the large Dubai tiles 7 and 8."""
    from unetkit.data.io import read_image

    files = sorted(DUBAI.glob("tile_7/*.jpg")) + sorted(DUBAI.glob("tile_8/*.jpg"))
    if not files:
        raise SystemExit(f"Dubai images not found under {DUBAI}")
    tiles = []
    for i in range(count):
        image = read_image(files[i % len(files)]).array
        _, h, w = image.shape
        row, col = (i * 389) % (h - TILE), (i * 613) % (w - TILE)
        tiles.append(image[:, row : row + TILE, col : col + TILE].copy())
    return np.stack(tiles)


def write_raster(path: Path, size: int, tiles: np.ndarray) -> float:
    """Fill a ``size x size`` GeoTIFF with the tiles, 2048 x 2048 window by window; returns seconds."""
    from unetkit.data.geotiff import GeoTiffWriter

    meta = {"crs": "EPSG:32640", "transform": TRANSFORM, "compress": "none"}
    start = time.perf_counter()
    with GeoTiffWriter(path, height=size, width=size, count=3, dtype="uint8", meta=meta) as writer:
        for row in range(0, size, WINDOW):
            for col in range(0, size, WINDOW):
                h, w = min(WINDOW, size - row), min(WINDOW, size - col)
                block = np.empty((3, h, w), dtype=np.uint8)
                for r in range(0, h, TILE):
                    for c in range(0, w, TILE):
                        k = ((row + r) // TILE * 7 + (col + c) // TILE * 3) % len(tiles)
                        block[:, r : r + TILE, c : c + TILE] = tiles[k][:, : h - r, : w - c]
                writer.write(block, (row, col, h, w))
    return time.perf_counter() - start


def make_run(folder: Path, *, width: int, depth: int, overlap: float) -> Path:
    """plan.yaml + best/ for an untrained RGB U-Net with batch norm (no training needed for memory)."""
    import torch

    import unetkit
    from unetkit.config import InferConfig, ModelConfig, Plan
    from unetkit.data.options import DataConfig

    kwargs = {"in_channels": 3, "classes": 2, "spatial_dims": 2, "depth": depth, "width": width, "norm": "batch"}
    plan = Plan(data=DataConfig(in_channels=3, normalization="zscore"), model=ModelConfig(name="unet", kwargs=kwargs),
                infer=InferConfig(tile_size=[TILE, TILE], overlap=overlap, batch_size=4))
    folder.mkdir(parents=True)
    plan.save(folder / "plan.yaml")
    torch.manual_seed(0)
    unetkit.create_model("unet", **kwargs).eval().save_pretrained(folder / "best")
    return folder


def tiles_predicted(size: int, overlap: float) -> int:
    """Tiles the windowed path predicts for a square raster (tiles crossing a chunk border count per chunk)."""
    from unetkit.runtime.tiling import axis_starts

    starts = axis_starts(size, TILE, overlap=overlap)
    step = max(1, int(TILE * (1 - overlap)))
    chunk = max(1, (WINDOW - TILE) // step)  # as unetkit.infer.raster.predict_raster
    bounds = [starts[i] for i in range(0, len(starts), chunk)] + [size]
    per_axis = sum(sum(1 for s in starts if s < b and s + TILE > a) for a, b in zip(bounds[:-1], bounds[1:], strict=True))
    return per_axis**2


def run_child(args: list[str], log: Path) -> dict:
    """Run a child process; returns its wall time and its own peak RSS (``wait4`` rusage, KiB on Linux)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, *args], stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}):\n{log.read_text()[-3000:]}")
    return {"wall_s": round(time.perf_counter() - start, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def check_output(mask: Path, source: Path) -> dict:
    import rasterio

    with rasterio.open(source) as src, rasterio.open(mask) as ds:
        same = ds.crs == src.crs and ds.transform == src.transform and (ds.height, ds.width) == (src.height, src.width)
        return {"output_matches_input_geometry": bool(same), "output_mb": round(mask.stat().st_size / 2**20, 1)}


def predict(run: Path, raster: Path, out: Path, *, windowed: bool) -> dict:
    args = ["-m", "unetkit.cli", "predict", str(run), str(raster), "--out", str(out), "--no-overlay"]
    result = run_child(args + (["--windowed"] if windowed else []), out.with_suffix(".log"))
    return {**result, **check_output(out / raster.name, raster)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 8192, 16384])
    parser.add_argument("--budget-s", type=float, default=540.0)
    parser.add_argument("--width", type=int, default=4)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--out", type=Path, default=RESULT, help=f"JSON result (default {RESULT.relative_to(ROOT)})")
    args = parser.parse_args()
    started = time.perf_counter()
    sizes = sorted(args.sizes)
    report: dict = {
        "what": "peak RSS of `unetkit predict --windowed` (own process, os.wait4 ru_maxrss) vs raster size",
        "model": {"name": "unet", "width": args.width, "depth": args.depth, "norm": "batch", "untrained": True},
        "infer": {"tile": TILE, "overlap": args.overlap, "batch_size": 4, "window": WINDOW},
        "raster": {"bands": 3, "dtype": "uint8", "block": TILE, "compress": "none", "source": "Dubai aerial JPEG tiles"},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg_start": os.getloadavg()},
        "sizes": {},
    }
    with tempfile.TemporaryDirectory(prefix="unetkit_bench_tiling_") as tmp_name:
        tmp = Path(tmp_name)
        run = make_run(tmp / "run", width=args.width, depth=args.depth, overlap=args.overlap)
        imports = ["-c", "import torch, rasterio, unetkit.cli; from unetkit.infer import predictor, raster, tiling"]
        report["imports_only"] = run_child(imports, tmp / "imports.log")
        tiles = source_tiles()
        seconds_per_tile = None
        for size in sizes:
            count = tiles_predicted(size, args.overlap)
            entry: dict = {"size_px": [size, size], "tiles_predicted": count}
            if seconds_per_tile is not None:
                estimate = count * seconds_per_tile + report["imports_only"]["wall_s"] + 3 * size**2 / 2**20 * 0.1
                left = args.budget_s - (time.perf_counter() - started)
                entry["estimated_s"] = round(estimate, 1)
                if estimate > left:
                    entry["skipped"] = f"estimated {estimate:.0f} s > {left:.0f} s left of the {args.budget_s:.0f} s budget"
                    report["sizes"][str(size)] = entry
                    print(f"{size}: skipped ({entry['skipped']})", flush=True)
                    continue
            raster = tmp / f"raster_{size}.tif"
            entry["create_s"] = round(write_raster(raster, size, tiles), 1)
            entry["windowed"] = predict(run, raster, tmp / f"out_{size}", windowed=True)
            if size == sizes[0]:
                entry["in_memory"] = predict(run, raster, tmp / f"out_{size}_memory", windowed=False)
                spent = entry["windowed"]["wall_s"] - report["imports_only"]["wall_s"]
                seconds_per_tile = max(spent, 1.0) / count
                entry["seconds_per_tile"] = round(seconds_per_tile, 3)
            entry["peak_above_imports_mb"] = round(
                entry["windowed"]["peak_rss_mb"] - report["imports_only"]["peak_rss_mb"], 1)
            raster.unlink()
            report["sizes"][str(size)] = entry
            print(f"{size}: {json.dumps(entry)}", flush=True)
    measured = {s: e["windowed"]["peak_rss_mb"] for s, e in report["sizes"].items() if "windowed" in e}
    smallest, largest = str(sizes[0]), max(measured, key=int)
    report["peak_ratio_largest_over_smallest"] = {
        "sizes": [int(largest), int(smallest)],
        "ratio": round(measured[largest] / measured[smallest], 3),
        "target": 1.5,
    }
    report["machine"]["load_avg_end"] = os.getloadavg()
    report["total_s"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
