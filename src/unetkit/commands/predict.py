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
import sys
from pathlib import Path

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
    from unetkit.infer.files import claim_outputs, expand_inputs, output_paths, predict_file
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
            claim_outputs(path, targets, claimed)
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


def _windowed(path: Path, predictor, args: argparse.Namespace) -> bool:  # type: ignore[no-untyped-def]
    from unetkit.infer.raster import is_large_raster

    if predictor.spatial_dims != 2 or full_suffix(path) not in (".tif", ".tiff"):
        return False
    return is_large_raster(path, threshold_pixels=0 if args.windowed else args.window_threshold)


