"""``unetkit predict RUN INPUTS... --out DIR [--ensemble RUN2 ...]``: masks (same format/geometry as the input), overlays,
optional probabilities and uncertainty. A bad input is reported and skipped; exit 1 at the end.

Outputs per input ``<stem>.<ext>``: the mask ``<stem>.<ext>`` for TIFF / NIfTI inputs (same CRS and
transform, or the same affine), ``<stem>.png`` otherwise; ``<stem>_prob`` and ``<stem>_uncertainty`` as
float32 ``.tif`` (``.nii.gz`` for NIfTI inputs, with the input's affine); ``<stem>_overlay.png`` for 2D
images. Every file is written to a temporary name and renamed into place once complete.
Single-page TIFFs larger than ``--window-threshold`` pixels (or any with ``--windowed``) are predicted
window by window (:mod:`unetkit.infer.raster`): memory is bounded, no overlay, no ``--min-size``.
"""

from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path

import numpy as np

from unetkit.data._common import full_suffix

NIFTI = (".nii", ".nii.gz")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from unetkit.infer.raster import DEFAULT_WINDOWED_PIXELS

    parser.add_argument("run", help="run directory written by `unetkit train`, or a cross-validation folder "
                                    "(`train --fold all`) whose fold_* runs then predict as an ensemble")
    parser.add_argument("inputs", nargs="+", help="image files, folders or globs")
    parser.add_argument("--ensemble", action="append", default=[], metavar="RUN2",
                        help="add another run (or CV folder) to the ensemble (repeatable): the models' class "
                             "probabilities, each after its own TTA, are averaged before thresholding/argmax")
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
    parser.add_argument("--onnx", default=None, metavar="MODEL.onnx",
                        help="run this graph (from `unetkit export` of the same run) in ONNX Runtime")
    parser.add_argument("--windowed", action="store_true", help="predict every TIFF window by window")
    parser.add_argument("--window-threshold", type=int, default=DEFAULT_WINDOWED_PIXELS, metavar="PIXELS",
                        help=f"TIFFs with more pixels are predicted window by window (default {DEFAULT_WINDOWED_PIXELS})")
    parser.add_argument("--device", default="cpu")


def run(args: argparse.Namespace) -> int:
    from unetkit.infer.ensemble import load_predictor, resolve_runs
    from unetkit.infer.predictor import Predictor

    overrides = {k: v for k, v in {"tta": args.tta, "overlap": args.overlap, "min_size": args.min_size}.items()
                 if v is not None}
    runs = resolve_runs(args.run, args.ensemble)
    if args.onnx and len(runs) > 1:
        raise ValueError("--onnx runs one exported model; it cannot be combined with an ensemble")
    if args.onnx:
        _check_onnx_matches_run(Path(args.onnx), runs[0] / args.checkpoint)
        predictor = Predictor.from_run(runs[0], checkpoint=args.checkpoint, device=args.device, fast=not args.no_fast,
                                       backend="onnx", onnx_path=args.onnx, **overrides)
    else:
        predictor = load_predictor(runs, checkpoint=args.checkpoint, device=args.device, fast=not args.no_fast,
                                   **overrides)
    if len(runs) > 1:
        print(f"ensemble of {len(runs)} models: {', '.join(str(r) for r in runs)}", flush=True)
    if args.uncertainty and not predictor.with_uncertainty:
        raise ValueError("--uncertainty needs test-time augmentation: add --tta flips (or d4)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files = expand_inputs(args.inputs)
    failures, claimed = 0, {p.resolve() for p in files}
    for path in files:
        try:
            targets = output_paths(path, out, prob=args.prob, uncertainty=args.uncertainty,
                                   overlay=not args.no_overlay)
            _claim(path, targets, claimed)
            written = predict_file(predictor, path, targets, windowed=_windowed(path, predictor, args))
            print(f"{path} -> {', '.join(p.name for p in written)}", flush=True)
        except (ValueError, OSError, RuntimeError) as err:
            failures += 1
            print(f"unetkit predict: {path}: {err}", file=sys.stderr, flush=True)
    print(f"{len(files) - failures} of {len(files)} input(s) predicted into {out}")
    return 1 if failures else 0


def _check_onnx_matches_run(onnx: Path, checkpoint: Path) -> None:
    """With the export report beside the graph, refuse a graph exported from other weights than the run's."""
    import json

    from unetkit.commands.export import file_sha256
    from unetkit.models.base import WEIGHTS_NAME

    report = onnx.with_name(onnx.name + ".json")
    if not report.is_file():
        return  # a graph exported by other means: the user vouches for it
    exported = json.loads(report.read_text()).get("weights_sha256")
    if exported and exported != file_sha256(checkpoint / WEIGHTS_NAME):
        raise ValueError(f"{onnx} was exported from other weights than {checkpoint} (see {report.name})")


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


def output_paths(path: Path, out: Path, *, prob: bool, uncertainty: bool, overlay: bool) -> dict[str, Path]:
    """The files written for input ``path`` (keys ``mask``, and ``prob`` / ``uncertainty`` / ``overlay`` if asked).

    Raises:
        ValueError: a file type ``unetkit`` cannot read (before any work is done).
    """
    from unetkit.data.io import SUPPORTED_SUFFIXES

    suffix = full_suffix(path)
    if suffix not in SUPPORTED_SUFFIXES:
        raise ValueError(f"unsupported image type {suffix or '(no suffix)'!r}; supported: {', '.join(SUPPORTED_SUFFIXES)}")
    stem = path.name[: -len(suffix)]
    keeps_format = suffix in (".tif", ".tiff") + NIFTI
    extra = ".nii.gz" if suffix in NIFTI else ".tif"
    targets = {"mask": out / (stem + (suffix if keeps_format else ".png"))}
    if prob:
        targets["prob"] = out / f"{stem}_prob{extra}"
    if uncertainty:
        targets["uncertainty"] = out / f"{stem}_uncertainty{extra}"
    if overlay:
        targets["overlay"] = out / f"{stem}_overlay.png"
    return targets


def _claim(path: Path, targets: dict[str, Path], claimed: set[Path]) -> None:
    """Refuse outputs that would overwrite an input or another input's outputs of this run."""
    for target in targets.values():
        resolved = target.resolve()
        if resolved in claimed:
            raise ValueError(f"output {target} would overwrite an input or another input's output; "
                             "use another --out folder or rename the input")
    claimed.update(t.resolve() for t in targets.values())


def _windowed(path: Path, predictor, args: argparse.Namespace) -> bool:  # type: ignore[no-untyped-def]
    from unetkit.infer.raster import is_large_raster

    if predictor.spatial_dims != 2 or full_suffix(path) not in (".tif", ".tiff"):
        return False
    return is_large_raster(path, threshold_pixels=0 if args.windowed else args.window_threshold)


def predict_file(predictor, path: Path, targets: dict[str, Path], *, windowed: bool = False) -> list[Path]:  # type: ignore[no-untyped-def]
    """Predict one file and write ``targets`` (see :func:`output_paths`) atomically; returns the paths written."""
    if windowed:
        from unetkit.infer.raster import predict_raster

        if predictor.infer.min_size > 0:
            print(f"unetkit predict: {path}: note: --min-size is not applied to windowed rasters", file=sys.stderr)
        return predict_raster(predictor, path, mask_path=targets["mask"], prob_path=targets.get("prob"),
                              uncertainty_path=targets.get("uncertainty")).written
    from unetkit.data.io import read_image, write_image

    image = read_image(path)
    result = predictor(image.array.astype(np.float32))
    meta = _geometry(image.meta)
    labels = result.labels.astype(np.uint8 if result.labels.max(initial=0) < 256 else np.uint16)
    written = [targets["mask"]]
    write_image(written[-1], labels[None], meta=meta if full_suffix(path) in (".tif", ".tiff") + NIFTI else None)
    if "prob" in targets:
        written.append(targets["prob"])
        write_image(written[-1], result.probabilities.astype(np.float32), meta=meta)
    if "uncertainty" in targets and result.uncertainty is not None:
        written.append(targets["uncertainty"])
        write_image(written[-1], result.uncertainty[None].astype(np.float32), meta=meta)
    if "overlay" in targets and labels.ndim == 2:
        from unetkit.infer.overlay import make_overlay

        written.append(targets["overlay"])
        rgb = np.moveaxis(image.array[:3], 0, -1) if image.array.shape[0] >= 3 else image.array[0]
        write_image(written[-1], np.moveaxis(make_overlay(rgb, result.labels), -1, 0))
    return written


def _geometry(meta: dict) -> dict | None:  # type: ignore[type-arg]
    """Where the outputs sit: the source's CRS + transform (GeoTIFF) or affine + header (NIfTI), else None.

    The source's ``nodata`` is dropped: it describes the image's pixel values, and in a label raster it
    would mark class ``nodata`` (often 0, the background) as missing.
    """
    if meta.get("format") == "nifti":
        return meta
    if meta.get("crs") is not None or meta.get("transform") is not None:
        return {"crs": meta.get("crs"), "transform": meta.get("transform")}
    return None
