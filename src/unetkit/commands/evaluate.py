"""``unetkit evaluate RUN DATA [--ensemble RUN2 ...]``: per-image CSV, summary JSON and the worst cases as overlays.

Volumes (3D runs) are predicted on their own grid (resampled to the plan's spacing and back, as ``predict``
does) and scored per class and per case in millimetres: Dice, HD95 (mm) and surface Dice at
``--nsd-tolerance`` mm, one ``<metric>_<class>`` column each in ``per_image.csv``, means in ``summary.json``.
An empty class never scores NaN: absent from both label and prediction it counts as perfect (Dice 1, HD95 0,
NSD 1); missed or predicted where there is none, as a failure (Dice 0, NSD 0, HD95 the volume's diagonal in mm).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from unetkit.choices import TTA_LEVELS
from unetkit.commands._argtypes import add_backend_argument
from unetkit.commands._data_args import add_data_arguments
from unetkit.data.options import DataConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory written by `unetkit train`, or a cross-validation folder "
                                    "(`train --fold all`) whose fold_* runs then score as an ensemble")
    parser.add_argument("data", help="labelled dataset (folder or CSV/JSON list); read with the run's data options")
    parser.add_argument("--ensemble", action="append", default=[], metavar="RUN2",
                        help="add another run (or CV folder) to the ensemble (repeatable): the models' class "
                             "probabilities, each after its own TTA, are averaged before thresholding/argmax")
    parser.add_argument("--out", default=None,
                        help="output folder (default RUN/eval; RUN/eval_ensemble with --ensemble)")
    parser.add_argument("--checkpoint", default="best", choices=("best", "last"),
                        help="which saved model of the run to score")
    parser.add_argument("--tta", default=None, choices=TTA_LEVELS,
                        help="test-time augmentation (default: the plan's infer.tta)")
    parser.add_argument("--worst", type=int, default=3, help="write overlays of the N worst images")
    parser.add_argument("--surface", action="store_true",
                        help="also HD95 and surface Dice (slower; always on for 3D runs)")
    parser.add_argument("--nsd-tolerance", type=float, default=None, metavar="MM",
                        help="surface Dice tolerance in the image's spacing units (mm for NIfTI; default 1)")
    parser.add_argument("--no-fast", action="store_true", help="plain eager fp32 (no BN folding / channels_last)")
    parser.add_argument("--onnx", default=None, metavar="MODEL.onnx",
                        help="score with ONNX Runtime on a graph from `unetkit export` of this run")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present, else cpu), cpu or cuda[:N]")
    add_backend_argument(parser)
    add_data_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from unetkit.data.dataset import load_samples
    from unetkit.data.discovery import discover
    from unetkit.infer.ensemble import EnsemblePredictor, load_predictor, resolve_runs
    from unetkit.infer.predictor import Predictor
    from unetkit.infer.scoring import (
        DEFAULT_NSD_TOLERANCE_MM,
        METRICS,
        SURFACE_METRICS,
        score_labels,
        summarise,
        write_scores,
        write_worst,
    )

    run_dir = Path(args.run)
    runs = resolve_runs(run_dir, args.ensemble)
    overrides = {"tta": args.tta} if args.tta else {}
    if args.onnx and len(runs) > 1:
        raise ValueError("--onnx scores one exported model; it cannot be combined with an ensemble")
    predictor: Predictor | EnsemblePredictor
    if args.onnx:
        predictor = Predictor.from_run(runs[0], checkpoint=args.checkpoint, device=args.device,
                                       fast=not args.no_fast, backend="onnx", onnx_path=args.onnx, **overrides)
    else:
        predictor = load_predictor(runs, checkpoint=args.checkpoint, device=args.device, fast=not args.no_fast,
                                   backend=args.backend, **overrides)
    print(predictor.describe(), flush=True)
    plan = predictor.plan
    data = _data_config(plan.data, args)
    out = Path(args.out) if args.out else run_dir / ("eval_ensemble" if args.ensemble else "eval")
    out.mkdir(parents=True, exist_ok=True)
    samples = discover(data).samples
    if not samples:
        raise ValueError(f"{args.data}: no labelled images found")
    volumes = plan.data.spatial_dims == 3
    names = METRICS + (SURFACE_METRICS if args.surface or volumes else ())
    tolerance = DEFAULT_NSD_TOLERANCE_MM if args.nsd_tolerance is None else args.nsd_tolerance
    if tolerance < 0:
        raise ValueError(f"--nsd-tolerance must be >= 0, got {tolerance}")
    rows, cases = [], []
    for sample in load_samples(samples, data):
        if sample.mask is None:  # discover() pairs every image it returns with a mask
            raise ValueError(f"{sample.key}: no mask to score the prediction against")
        spacing = sample.meta.get("spacing")
        result = predictor(sample.image, spacing=spacing)
        scores = score_labels(result.labels, sample.mask, plan, names, spacing=spacing if volumes else None,
                              nsd_tolerance=tolerance, per_class=volumes)
        rows.append({"key": sample.key, **scores})
        cases.append((scores["dice"], sample, result.labels))
        print(f"{sample.key}: " + "  ".join(f"{k} {v:.4f}" for k, v in scores.items()), flush=True)
    summary = summarise(rows, [k for k in rows[0] if k != "key"])
    write_scores(out, rows, summary)
    write_worst(out / "worst", cases, args.worst, background=plan.data.background, ignore_index=plan.data.ignore_index)
    print("mean: " + "  ".join(f"{k} {v:.4f}" for k, v in summary.items() if k != "images") + f"  ({len(rows)} images)")
    return 0


def _data_config(trained: DataConfig, args: argparse.Namespace) -> DataConfig:
    """The run's data options with this dataset's location (and folders, if given)."""
    from unetkit.data.annotations import with_source_classes

    fields = {**trained.__dict__, "root": str(args.data), "image_dir": args.image_dir, "mask_dir": args.mask_dir,
              "roi_dir": args.roi_dir, "vector_labels": args.vector_labels or trained.vector_labels,
              "class_field": args.class_field or trained.class_field}
    # An annotation export must name the run's classes in the run's order (else the scores compare wrong classes).
    return with_source_classes(DataConfig(**fields))
