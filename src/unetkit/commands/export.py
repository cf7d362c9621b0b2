"""``unetkit export RUN --format onnx --out model.onnx``: the per-tile pipeline as ONNX, checked, with a report.

The graph maps a *normalised* tile to probabilities (contract in :mod:`unetkit.infer.onnx_backend`). It is
checked against eager PyTorch in ONNX Runtime at two sizes (the plan's tile, batch 1, and an odd size that is
not a multiple of 32, batch 2) before it is written. ``<out>.json`` next to it says exactly what the graph
expects and returns, how to normalise, how labels are decided, the measured differences and the CPU's
precision flags. Both files are written atomically.

``--int8`` also writes ``<stem>.int8.onnx`` (static QDQ int8, calibrated on the run's training images; see
:mod:`unetkit.quantize`) and its report, but only when the validation Dice (mIoU for multi-class runs) of
int8 is at most ``--int8-max-drop`` below fp32; otherwise it prints one line saying so and exits 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

FORMATS = ("onnx",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory written by `unetkit train`")
    parser.add_argument("--format", default="onnx", choices=FORMATS, help="export format (default onnx)")
    parser.add_argument("--out", default=None,
                        help="destination file, e.g. model.onnx; the report is <out>.json (default: model.onnx in the "
                             "checkpoint folder, RUN/best/model.onnx, where predict/evaluate/serve's --backend auto "
                             "find it and, with --int8, the accepted model.int8.onnx beside it)")
    parser.add_argument("--checkpoint", default="best", choices=("best", "last"),
                        help="which saved model of the run to export")
    parser.add_argument("--atol", type=float, default=1e-4, help="largest allowed difference on probabilities")
    parser.add_argument("--int8", action="store_true",
                        help="also write <stem>.int8.onnx: static int8 (QDQ) calibrated on the run's training "
                             "images, kept only if the validation score holds (see --int8-max-drop)")
    parser.add_argument("--int8-max-drop", type=float, default=0.01, metavar="D",
                        help="largest accepted drop of validation Dice (mIoU for multi-class) from fp32 to int8 "
                             "(default 0.01)")
    parser.add_argument("--resolution-cm", type=float, default=None, metavar="CM",
                        help="ground resolution of the imagery in cm per pixel, recorded for QGIS Deepness "
                             "(default: the GeoTIFF pixel size of the run's first training image, when it has one)")
    parser.add_argument("--calibration-patches", type=int, default=32, metavar="N",
                        help="training tiles that calibrate the int8 activation ranges (default 32)")


def run(args: argparse.Namespace) -> int:
    from unetkit._io import write_json_atomic
    from unetkit.export import export_run_graph
    from unetkit.infer.backend import GRAPH_NAME
    from unetkit.models.base import load_model
    from unetkit.run_layout import load_run_plan, weights_dir

    run_dir = Path(args.run)
    plan = load_run_plan(run_dir)
    weights = weights_dir(run_dir, args.checkpoint)
    model = load_model(weights)
    out = Path(args.out) if args.out else weights / GRAPH_NAME
    if out.suffix.lower() != ".onnx":
        raise ValueError(f"--out must end in .onnx, got {out.name}")
    print(f"exporting {weights} to {out} and checking it in ONNX Runtime ...", flush=True)
    exported, report = export_run_graph(model, plan, weights=weights, out=out, checkpoint=args.checkpoint,
                                        atol=args.atol)
    _add_deepness_metadata(out, plan, args)
    report["file_size_bytes"] = out.stat().st_size
    write_json_atomic(out.with_name(out.name + ".json"), report)
    diffs = ", ".join(f"{k}: {v:.2g}" for k, v in exported.max_abs_diff.items())
    print(f"wrote {out} ({exported.file_size_bytes / 2**20:.1f} MiB) and {out.name}.json; "
          f"max |ONNX Runtime - PyTorch| on probabilities: {diffs}", flush=True)
    return _export_int8(args, run_dir=run_dir, out=out, fp32_report=report) if args.int8 else 0


def _add_deepness_metadata(path: Path, plan, args: argparse.Namespace) -> None:  # type: ignore[no-untyped-def]
    """QGIS Deepness' keys (model type, class names, tile size, overlap, ...) in the ONNX file's metadata."""
    from unetkit.onnx_metadata import deepness_metadata, write_metadata

    typed = plan.model.typed()
    classes = typed.classes if typed is not None else len(plan.data.classes) or 2
    resolution = args.resolution_cm if args.resolution_cm is not None else _pixel_size_cm(plan)
    write_metadata(path, deepness_metadata(plan, classes=classes, resolution_cm=resolution))


def _pixel_size_cm(plan) -> float | None:  # type: ignore[no-untyped-def]
    """The pixel size in cm of the run's first training image, if it is a GeoTIFF in a metric CRS."""
    from unetkit.data.discovery import discover
    from unetkit.data.geotiff import pixel_size_cm

    try:
        samples = discover(plan.data).samples
    except (ValueError, OSError, ImportError):
        return None
    first = samples[0].image_paths[0] if samples else None
    return pixel_size_cm(first) if first is not None and first.suffix.lower() in (".tif", ".tiff") else None


def _export_int8(args: argparse.Namespace, *, run_dir: Path, out: Path, fp32_report: dict[str, Any]) -> int:
    """Quantise the fp32 graph, print the comparison; 1 when the drop is too large (nothing written)."""
    from unetkit._io import write_json_atomic
    from unetkit.infer.predictor import onnx_labeller
    from unetkit.precision import cpu_flags
    from unetkit.quantize import QuantizationRefused, int8_report, quantize_run
    from unetkit.run_layout import load_run_plan

    int8_out = out.with_name(out.stem + ".int8.onnx")
    print(f"quantising to int8 with {args.calibration_patches} calibration tiles and comparing on the "
          "validation images ...", flush=True)
    try:
        result = quantize_run(run_dir, out, int8_out, labeller=onnx_labeller, checkpoint=args.checkpoint,
                              calibration_patches=args.calibration_patches, max_drop=args.int8_max_drop)
    except QuantizationRefused as refused:
        print(f"unetkit export: {refused}", file=sys.stderr, flush=True)
        return 1
    _add_deepness_metadata(int8_out, load_run_plan(run_dir), args)
    report_path = int8_out.with_name(int8_out.name + ".json")
    write_json_atomic(report_path, int8_report(fp32_report, result, cpu=cpu_flags()))
    speed = result.images_per_s
    print(f"wrote {int8_out} ({result.file_size_bytes / 2**20:.1f} MiB) and {report_path.name}; validation "
          f"{result.metric} fp32 {result.dice_fp32:.4f}, int8 {result.dice_int8:.4f} "
          f"(drop {result.drop:.4f} <= {result.max_drop:g}); images/s fp32 {speed['fp32']:.2f}, "
          f"int8 {speed['int8']:.2f} on {result.validation_images} image(s)")
    return 0
