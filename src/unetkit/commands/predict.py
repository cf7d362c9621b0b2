"""``unetkit predict RUN INPUTS... --out DIR``: masks (same format/geometry as the input), overlays,
optional probabilities and uncertainty. A bad input is reported and skipped; exit 1 at the end."""

from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path

import numpy as np

from unetkit.data._common import full_suffix


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory written by `unetkit train`")
    parser.add_argument("inputs", nargs="+", help="image files, folders or globs")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--checkpoint", default="best", choices=("best", "last"))
    parser.add_argument("--tta", default=None, choices=("none", "flips", "d4", "d4+scales"),
                        help="test-time augmentation: none (1 pass), flips (4 in 2D), d4 (8), d4+scales (24)")
    parser.add_argument("--overlap", type=float, default=None, help="tile overlap fraction (default from the plan)")
    parser.add_argument("--min-size", type=int, default=None, help="remove components smaller than N pixels")
    parser.add_argument("--prob", action="store_true", help="also write <stem>_prob.tif (float32 per class)")
    parser.add_argument("--uncertainty", action="store_true", help="also write <stem>_uncertainty.tif (needs --tta)")
    parser.add_argument("--no-overlay", action="store_true", help="skip <stem>_overlay.png")
    parser.add_argument("--no-fast", action="store_true", help="plain eager fp32 (no BN folding / channels_last)")
    parser.add_argument("--device", default="cpu")


def run(args: argparse.Namespace) -> int:
    from unetkit.infer.predictor import Predictor

    overrides = {k: v for k, v in {"tta": args.tta, "overlap": args.overlap, "min_size": args.min_size}.items()
                 if v is not None}
    if args.uncertainty and overrides.get("tta", "none") == "none":
        raise ValueError("--uncertainty needs test-time augmentation: add --tta flips (or d4)")
    predictor = Predictor.from_run(args.run, checkpoint=args.checkpoint, device=args.device,
                                   fast=not args.no_fast, **overrides)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files = expand_inputs(args.inputs)
    failures = 0
    for path in files:
        try:
            written = predict_file(predictor, path, out, prob=args.prob, uncertainty=args.uncertainty,
                                   overlay=not args.no_overlay)
            print(f"{path} -> {', '.join(p.name for p in written)}")
        except (ValueError, OSError) as err:
            failures += 1
            print(f"unetkit predict: {path}: {err}", file=sys.stderr)
    print(f"{len(files) - failures} of {len(files)} input(s) predicted into {out}")
    return 1 if failures else 0


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files, folders (their image files, sorted) and globs -> a list of files; nothing found is an error."""
    from unetkit.data.io import SUPPORTED_SUFFIXES

    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.is_file() and full_suffix(p) in SUPPORTED_SUFFIXES)
        elif path.exists():
            files.append(path)
        else:
            matches = sorted(Path(m) for m in glob.glob(item))
            if not matches:
                raise FileNotFoundError(f"{item}: no such file, folder or matching glob")
            files += matches
    if not files:
        raise FileNotFoundError(f"no images found in {', '.join(inputs)}")
    return files


def predict_file(predictor, path: Path, out: Path, *, prob: bool, uncertainty: bool, overlay: bool) -> list[Path]:  # type: ignore[no-untyped-def]
    """Predict one file and write its outputs atomically; returns the paths written."""
    from unetkit.data.io import read_image, write_image
    from unetkit.infer.overlay import make_overlay

    image = read_image(path)
    result = predictor(image.array.astype(np.float32))
    stem, suffix = _stem(path), full_suffix(path)
    keeps_format = suffix in (".tif", ".tiff", ".nii", ".nii.gz")
    mask_path = out / (stem + (suffix if keeps_format else ".png"))
    labels = result.labels.astype(np.uint8 if result.labels.max() < 256 else np.uint16)
    write_image(mask_path, labels[None], meta=image.meta if keeps_format else None)
    written = [mask_path]
    geo_meta = image.meta if image.meta.get("crs") is not None or image.meta.get("transform") is not None else None
    if prob:
        written.append(out / f"{stem}_prob.tif")
        write_image(written[-1], result.probabilities.astype(np.float32), meta=geo_meta)
    if uncertainty and result.uncertainty is not None:
        written.append(out / f"{stem}_uncertainty.tif")
        write_image(written[-1], result.uncertainty[None].astype(np.float32), meta=geo_meta)
    if overlay and labels.ndim == 2:
        written.append(out / f"{stem}_overlay.png")
        rgb = np.moveaxis(image.array[:3], 0, -1) if image.array.shape[0] >= 3 else image.array[0]
        write_image(written[-1], np.moveaxis(make_overlay(rgb, result.labels), -1, 0))
    return written


def _stem(path: Path) -> str:
    name = path.name
    return name[: -len(full_suffix(path))] if full_suffix(path) else path.stem
