"""Peak memory of producing and reading a huge GeoTIFF window by window.

Creates a 16k x 16k, 3-band uint8 GeoTIFF (tiled 512 x 512, deflate; 768 MB of pixels) filled with
512 x 512 tiles cut from the real Dubai aerial JPEGs, written 1024 x 1024 window by window with
:class:`unetkit.data.geotiff.GeoTiffWriter`. A fresh subprocess then reads it back window by window
with :func:`unetkit.data.io.read_image` and computes the per-band mean. The same is done for a
2k x 2k file; if the reader is bounded, both peak RSS figures are about the same and far below
768 MB. Each step runs in its own process so ``ru_maxrss`` measures that step alone; an
"imports only" process gives the fixed cost of Python + numpy + rasterio + unetkit (whose package
``__init__`` imports torch), and ``*_peak_above_imports_mb`` is the peak minus that process's own
RSS after its imports, i.e. what the raster work itself added.

Usage::

    PYTHONPATH=src python benchmarks/bench_geotiff_window.py [--sizes 16384 2048] [--window 1024]

Writes ``benchmarks/results/geotiff_window.json`` and prints it. Temporary rasters are deleted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
DUBAI = ROOT.parent / "shared" / "datasets" / "dubai_aerial_landcover" / "images"
RESULT = ROOT / "benchmarks" / "results" / "geotiff_window.json"
TILE = 512
UTM40N = "EPSG:32640"


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def source_tiles(count: int) -> np.ndarray:
    """``(count, 3, 512, 512)`` uint8 tiles cut from the large Dubai tiles 7 and 8."""
    from unetkit.data.io import read_image

    files = sorted(DUBAI.glob("tile_7/*.jpg")) + sorted(DUBAI.glob("tile_8/*.jpg"))
    if not files:
        raise SystemExit(f"Dubai images not found under {DUBAI}")
    tiles = []
    for i in range(count):
        image = read_image(files[i % len(files)]).array
        _, h, w = image.shape
        # A different position in each reuse of a file, still inside the image.
        row = (i * 389) % (h - TILE)
        col = (i * 613) % (w - TILE)
        tiles.append(image[:, row : row + TILE, col : col + TILE].copy())  # a view would pin the whole image
    return np.stack(tiles)


def tile_index(row: int, col: int, count: int) -> int:
    """Which source tile goes at tile position (row, col): a fixed, non-repeating-looking pattern."""
    return (row * 7 + col * 3 + (row * col) % 5) % count


def do_write(path: Path, size: int, window: int, count: int) -> dict:
    """Write the raster window by window; returns timing, peak RSS and the exact per-band sums."""
    from unetkit.data.geotiff import GeoTiffWriter

    baseline = peak_rss_mb()  # after imports (torch comes with `import unetkit`)
    tiles = source_tiles(count)
    tile_sums = tiles.reshape(count, 3, -1).sum(axis=2, dtype=np.float64)
    meta = {"crs": UTM40N, "transform": (0.3, 0.0, 500000.0, 0.0, -0.3, 2790000.0)}
    sums = np.zeros(3)
    start = time.perf_counter()
    with GeoTiffWriter(path, height=size, width=size, count=3, dtype="uint8", meta=meta) as writer:
        for row in range(0, size, window):
            for col in range(0, size, window):
                block = np.empty((3, window, window), dtype=np.uint8)
                for r in range(0, window, TILE):
                    for c in range(0, window, TILE):
                        k = tile_index((row + r) // TILE, (col + c) // TILE, count)
                        block[:, r : r + TILE, c : c + TILE] = tiles[k]
                        sums += tile_sums[k]
                writer.write(block, (row, col, window, window))
    return {
        "write_s": round(time.perf_counter() - start, 2),
        "write_peak_rss_mb": round(peak_rss_mb(), 1),
        "write_peak_above_imports_mb": round(peak_rss_mb() - baseline, 1),
        "expected_band_means": (sums / size**2).tolist(),
        "file_mb": round(path.stat().st_size / 2**20, 1),
    }


def do_read(path: Path, window: int) -> dict:
    """Read every window with read_image and accumulate per-band sums; returns timing and peak RSS."""
    from unetkit.data.geotiff import raster_shape
    from unetkit.data.io import read_image

    baseline = peak_rss_mb()
    _, height, width = raster_shape(path)
    sums = np.zeros(3)
    windows = 0
    start = time.perf_counter()
    for row in range(0, height, window):
        for col in range(0, width, window):
            h, w = min(window, height - row), min(window, width - col)
            part = read_image(path, window=(row, col, h, w)).array
            sums += part.reshape(part.shape[0], -1).sum(axis=1, dtype=np.float64)
            windows += 1
    return {
        "read_s": round(time.perf_counter() - start, 2),
        "read_peak_rss_mb": round(peak_rss_mb(), 1),
        "read_peak_above_imports_mb": round(peak_rss_mb() - baseline, 1),
        "windows_read": windows,
        "band_means": (sums / (height * width)).tolist(),
    }


def do_imports() -> dict:
    import rasterio  # noqa: F401

    from unetkit.data import geotiff, io  # noqa: F401

    return {"imports_only_peak_rss_mb": round(peak_rss_mb(), 1)}


def in_subprocess(role: str, *args: str) -> dict:
    """Run one step in a fresh interpreter and return its JSON answer."""
    out = subprocess.run(
        [sys.executable, __file__, "--role", role, *args], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[16384, 2048])
    parser.add_argument("--window", type=int, default=1024)
    parser.add_argument("--tiles", type=int, default=24)
    parser.add_argument("--role", choices=["main", "write", "read", "imports"], default="main")
    parser.add_argument("--path", default="")
    parser.add_argument("--size", type=int, default=0)
    args = parser.parse_args()
    if args.role == "write":
        print(json.dumps(do_write(Path(args.path), args.size, args.window, args.tiles)))
        return
    if args.role == "read":
        print(json.dumps(do_read(Path(args.path), args.window)))
        return
    if args.role == "imports":
        print(json.dumps(do_imports()))
        return

    import rasterio

    for size in args.sizes:
        if size % args.window or args.window % TILE:
            raise SystemExit(f"sizes must be multiples of --window, and --window a multiple of {TILE}")
    report: dict = {
        "what": "peak RSS of window-by-window GeoTIFF write and read (each in a fresh process)",
        "window": args.window,
        "block": TILE,
        "bands": 3,
        "dtype": "uint8",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "versions": {
            "rasterio": rasterio.__version__,
            "gdal": rasterio.__gdal_version__,
            "numpy": np.__version__,
        },
        **in_subprocess("imports"),
        "rasters": {},
    }
    with tempfile.TemporaryDirectory(prefix="unetkit_bench_geotiff_") as tmp:
        for size in args.sizes:
            path = Path(tmp) / f"raster_{size}.tif"
            common = ["--path", str(path), "--size", str(size), "--window", str(args.window)]
            written = in_subprocess("write", *common, "--tiles", str(args.tiles))
            read = in_subprocess("read", *common)
            match = np.allclose(read["band_means"], written["expected_band_means"], rtol=0, atol=1e-9)
            report["rasters"][str(size)] = {
                "size_px": [size, size],
                "pixels_mb": round(3 * size * size / 2**20, 1),
                **written,
                **read,
                "means_match_written_data": bool(match),
            }
            path.unlink()
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
