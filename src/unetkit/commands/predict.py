"""``unetkit predict RUN INPUTS... --out DIR [--ensemble RUN2 ...]``: masks (same format/geometry as the input), overlays,
optional probabilities and uncertainty. A bad input is reported and skipped; exit 1 at the end.

Outputs per input ``<stem>.<ext>``: the mask ``<stem>.<ext>`` for TIFF / NIfTI inputs (same CRS and
transform, or the same affine), ``<stem>.png`` otherwise; ``<stem>_prob`` and ``<stem>_uncertainty`` as
float32 ``.tif`` (``.nii.gz`` for NIfTI inputs, with the input's affine); ``<stem>_overlay.png`` for 2D
images. Every file is written to a temporary name and renamed into place once complete.
Single-page TIFFs larger than ``--window-threshold`` pixels (or any with ``--windowed``) are predicted
window by window (:mod:`unetkit.infer.raster`): memory is bounded, no overlay, no ``--min-size``.

Files are decoded ahead and written behind in threads while the network runs (:mod:`unetkit.infer.pipeline`;
same outputs, same lines in input order; ``--sequential`` does one file after the other). Under
``torchrun --nproc_per_node=N -m unetkit.cli predict ...`` process ``r`` predicts inputs ``r, r + N, ...`` of
the list, so each output is written once; every process prints its own lines and rank 0 the total.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from unetkit.choices import PRECISIONS, TTA_LEVELS
from unetkit.commands._argtypes import add_backend_argument

NIFTI = (".nii", ".nii.gz")
# Under torchrun each process waits at the end for the slowest one; the shares interleave the inputs, so they
# finish close together, but one huge raster can take hours.
FINISH_TIMEOUT_S = 24 * 3600.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from unetkit.infer.raster import DEFAULT_WINDOWED_PIXELS

    parser.add_argument("run", help="run directory written by `unetkit train`, or a cross-validation folder "
                                    "(`train --fold all`) whose fold_* runs then predict as an ensemble")
    parser.add_argument("inputs", nargs="+", help="image files, folders or globs")
    parser.add_argument("--ensemble", action="append", default=[], metavar="RUN2",
                        help="add another run (or CV folder) to the ensemble (repeatable): the models' class "
                             "probabilities, each after its own TTA, are averaged before thresholding/argmax")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--checkpoint", default="best", choices=("best", "last"),
                        help="which saved model of the run to use")
    parser.add_argument("--tta", default=None, choices=TTA_LEVELS,
                        help="test-time augmentation: none (1 pass), flips (4 in 2D), d4 (8), d4+scales (24)")
    parser.add_argument("--overlap", type=float, default=None, help="tile overlap fraction (default from the plan)")
    parser.add_argument("--max-pass-pixels", type=int, default=None, metavar="PIXELS",
                        help="images of up to this many pixels (voxels) go through the network in one pass, larger "
                             "ones in tiles of up to this size; 0 = tiles of the training patch (default: the plan's "
                             "infer.max_pass_pixels, auto = 1024 x 1024 in 2D)")
    parser.add_argument("--min-size", type=int, default=None, help="remove components smaller than N pixels")
    parser.add_argument("--prob", action="store_true", help="also write <stem>_prob.tif (float32 per class; NIfTI inputs: a 4D "
                             "<stem>_prob.nii.gz, x, y, z, classes, with the input's affine)")
    parser.add_argument("--uncertainty", action="store_true", help="also write <stem>_uncertainty.tif (needs --tta)")
    parser.add_argument("--no-overlay", action="store_true", help="skip <stem>_overlay.png")
    parser.add_argument("--no-fast", action="store_true", help="plain eager fp32 (no BN folding / channels_last)")
    parser.add_argument("--precision", default=None, choices=PRECISIONS,
                        help="what the fast path computes in (default: the plan's infer.precision, auto = bf16 "
                             "autocast on CUDA and on CPUs with native bf16 (AVX-512 BF16 / AMX), else fp32); "
                             "the choice and its reason are printed")
    parser.add_argument("--onnx", default=None, metavar="MODEL.onnx",
                        help="run this graph (from `unetkit export` of the same run) in ONNX Runtime")
    add_backend_argument(parser)
    parser.add_argument("--windowed", action="store_true", help="predict every TIFF window by window")
    parser.add_argument("--window-threshold", type=int, default=DEFAULT_WINDOWED_PIXELS, metavar="PIXELS",
                        help="TIFFs with more pixels are predicted window by window")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present, else cpu), cpu or cuda[:N] "
                        "(under torchrun a bare `cuda` becomes cuda:LOCAL_RANK)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="torch intra-op threads (default: one fewer than torch's own choice, leaving a core to the "
                             "reader / writer threads, or all of them with --sequential; under torchrun the "
                             "available cores divided by the number of processes)")
    parser.add_argument("--io-threads", type=int, default=2, metavar="N",
                        help="threads that decode inputs ahead, and as many that write outputs behind (default 2)")
    parser.add_argument("--sequential", action="store_true",
                        help="read, predict and write one file after the other (no reader / writer threads)")
    parser.add_argument("--skip-existing", action="store_true",
                        help="skip inputs whose every output file already exists (outputs are renamed into place "
                             "only when complete, so a killed run is finished by running it again with this flag)")
    parser.add_argument("--format", default="png", metavar="F[,F...]",
                        help="also write the predictions as annotations: png (the masks, always written), coco, cvat, "
                             "labelstudio, geojson, gpkg; several at once, e.g. png,coco,geojson (scored formats also "
                             "write <stem>_prob.tif)")
    parser.add_argument("--simplify", type=float, default=0.0, metavar="PX",
                        help="polygon simplification tolerance in pixels (0: exact pixel outlines)")
    parser.add_argument("--min-area", type=float, default=0.0, metavar="PX",
                        help="leave regions smaller than this many pixels out of the annotation formats")
    parser.add_argument("--coco-rle", action="store_true", help="COCO output as RLE for every region (else polygons)")
    parser.add_argument("--model-version", default=None,
                        help="Label Studio predictions' model_version (default: the run folder's name)")
    parser.add_argument("--engine", default="local", choices=("local", "ray"),
                        help="local: this process (or torchrun's); ray: a pool of model actors on a Ray cluster, "
                             "files handed out as actors free up, retried when an actor dies (needs the ray extra)")
    parser.add_argument("--address", default="local", metavar="ADDR",
                        help="--engine ray: local (start Ray on this machine for the run), auto (the cluster this "
                             "machine belongs to) or HOST:PORT of the cluster's head")
    parser.add_argument("--actors", type=int, default=2, metavar="N",
                        help="--engine ray: model actors (each loads the run once and takes --threads CPUs, default 1)")
    parser.add_argument("--gpus-per-actor", type=float, default=0.0, metavar="G",
                        help="--engine ray: GPUs per actor (a fraction shares one); 0 predicts on CPUs")
    parser.add_argument("--batch-images", action="store_true",
                        help="send consecutive same-shape images that each fit in one tile through the network "
                             "together (up to infer.batch_size); probabilities may differ from one at a time in "
                             "the last float bits")


def run(args: argparse.Namespace) -> int:
    from unetkit import ranks
    from unetkit.infer.paths import predict_paths

    for flag, value in (("--threads", args.threads), ("--io-threads", args.io_threads)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be at least 1, got {value}")
    if args.max_pass_pixels is not None and args.max_pass_pixels < 0:
        raise ValueError(f"--max-pass-pixels must be at least 0, got {args.max_pass_pixels}")
    outputs = _annotation_outputs(args)
    ctx = ranks.context_from_env()
    if args.engine == "ray":
        return _run_on_ray(args, torchrun=ctx.enabled, annotations=bool(outputs.extra))
    if ctx.enabled and outputs.extra:
        raise ValueError("--format other than png is not available under torchrun; predict in one process")
    threads = args.threads or (ranks.threads_per_process(ctx) if ctx.enabled else None)
    if threads:
        import torch

        torch.set_num_threads(threads)
    with ranks.cpu_group(ctx, timeout_s=FINISH_TIMEOUT_S):
        predictor = _load_predictor(args, device=ranks.device_for(ctx, args.device))
        out = Path(args.out)
        # Every process plans every input (same outputs, same refusals), then predicts its own share.
        run = predict_paths(predictor, _request(args, needs_probabilities=outputs.needs_probabilities,
                                                compute_threads=threads), share=lambda jobs: ranks.shard(jobs, ctx))
        planned, jobs = run.planned, run.to_do  # annotation files cover the skipped inputs too (their masks exist)
        for job in run.skipped:
            print(f"{job.path}: skipped, its outputs exist", flush=True)
        outcomes = run.outcomes
        failures = _print_outcomes(outcomes)
        if not ctx.enabled and outputs.extra:
            _write_annotations(planned, out, predictor, outputs)
        if not ctx.enabled:
            print(f"{len(jobs) - failures} of {len(jobs)} input(s) predicted into {out}")
            return 1 if failures else 0
        print(f"rank {ctx.rank} of {ctx.world_size}: {len(jobs) - failures} of {len(jobs)} input(s) predicted "
              f"into {out}", flush=True)
        # Every process waits for the others before it exits: torchrun stops them all as soon as one exits
        # with an error, which would cut the others' work (and rank 0's total) short.
        counts = ranks.all_gather((len(jobs) - failures, len(jobs)))
        done, total = sum(c[0] for c in counts), sum(c[1] for c in counts)
        if ctx.is_main and len(counts) == ctx.world_size:
            print(f"{done} of {total} input(s) predicted into {out} by {ctx.world_size} processes", flush=True)
        ranks.barrier()
    return 1 if done < total else 0


def _run_on_ray(args: argparse.Namespace, *, torchrun: bool, annotations: bool) -> int:
    """``--engine ray``: the same jobs, outputs and lines, predicted by a pool of actors on a Ray cluster."""
    from unetkit.infer.ensemble import resolve_runs
    from unetkit.infer.paths import is_windowed, plan_paths
    from unetkit.infer.ray_engine import PredictorSpec, RayOptions, import_ray, ray_pool

    refused = [flag for flag, on in (("torchrun", torchrun), ("--format other than png", annotations),
                                     ("--batch-images", args.batch_images), ("--sequential", args.sequential)) if on]
    if refused:
        raise ValueError(f"--engine ray cannot be combined with {', '.join(refused)}")
    import_ray()  # a missing extra is said before any work
    options = RayOptions(address=args.address, actors=args.actors, cpus_per_actor=args.threads or 1,
                         gpus_per_actor=args.gpus_per_actor)
    runs = tuple(str(r) for r in resolve_runs(args.run, args.ensemble))
    if args.onnx and len(runs) > 1:
        raise ValueError("--onnx runs one exported model; it cannot be combined with an ensemble")
    overrides = {k: v for k, v in {"tta": args.tta, "overlap": args.overlap, "min_size": args.min_size,
                                   "precision": args.precision, "max_pass_pixels": args.max_pass_pixels}.items()
                 if v is not None}
    spec = PredictorSpec(runs=runs, checkpoint=args.checkpoint, device="cuda" if args.gpus_per_actor > 0 else "cpu",
                         fast=not args.no_fast, backend=args.backend, onnx_path=args.onnx, overrides=overrides)
    out = Path(args.out)
    plan = plan_paths(_request(args, needs_probabilities=False, compute_threads=None))
    jobs, skipped = plan.to_do, plan.skipped
    for job in skipped:
        print(f"{job.path}: skipped, its outputs exist", flush=True)
    with ray_pool(spec, options=options) as pool:
        print(f"Ray: {options.actors} actor(s) at {args.address}; {pool.info.describe}", flush=True)
        if args.uncertainty and not pool.info.with_uncertainty:
            raise ValueError("--uncertainty needs test-time augmentation: add --tta flips (or d4)")
        def windowed(path: Path) -> bool:
            large = is_windowed(path, spatial_dims=pool.info.spatial_dims, threshold=_window_threshold(args))
            if large and pool.info.min_size > 0:
                print(f"unetkit predict: {path}: note: --min-size is not applied to windowed rasters", file=sys.stderr)
            return large

        outcomes = list(pool.predict(jobs, windowed=windowed))
    _print_outcomes(outcomes)
    failed = [o for o in outcomes if o.error is not None]
    print(f"{len(jobs) - len(failed)} done, {len(skipped)} skipped, {len(failed)} failed of "
          f"{len(jobs) + len(skipped)} input(s) into {out}", flush=True)
    for outcome in failed:
        print(f"  failed: {outcome.path}: {outcome.error}", file=sys.stderr, flush=True)
    return 1 if failed else 0


def _annotation_outputs(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from unetkit.infer.annotation_outputs import AnnotationOutputs, parse_formats

    for flag, value in (("--simplify", args.simplify), ("--min-area", args.min_area)):
        if value < 0:
            raise ValueError(f"{flag} must be >= 0, got {value}")
    return AnnotationOutputs(formats=parse_formats(args.format), simplify=args.simplify, min_area=args.min_area,
                             rle=args.coco_rle, model_version=args.model_version or Path(args.run).resolve().name)


def _write_annotations(jobs, out: Path, predictor, outputs) -> None:  # type: ignore[no-untyped-def]
    from unetkit.infer.annotation_outputs import write_annotation_outputs
    from unetkit.infer.scoring import class_names

    plan = predictor.plan
    typed = plan.model.typed()
    classes = list(plan.data.classes) or class_names(plan, typed.classes if typed is not None else 2)
    done = [(job.path, job.targets["mask"], job.targets.get("prob")) for job in jobs
            if job.targets is not None and job.targets["mask"].is_file()]  # fmt: skip
    for path in write_annotation_outputs(done, out=out, classes=classes, options=outputs):
        print(f"annotations -> {path}", flush=True)


def _load_predictor(args: argparse.Namespace, *, device: str):  # type: ignore[no-untyped-def]
    from unetkit.infer.ensemble import EnsemblePredictor, load_predictor, resolve_runs
    from unetkit.infer.predictor import Predictor

    overrides = {k: v for k, v in {"tta": args.tta, "overlap": args.overlap, "min_size": args.min_size,
                                   "precision": args.precision, "max_pass_pixels": args.max_pass_pixels}.items()
                 if v is not None}
    runs = resolve_runs(args.run, args.ensemble)
    if args.onnx and len(runs) > 1:
        raise ValueError("--onnx runs one exported model; it cannot be combined with an ensemble")
    if args.onnx:
        from unetkit.export import check_onnx_matches_run
        from unetkit.infer.onnx_backend import load_onnx_graph

        load_onnx_graph(args.onnx)  # a corrupt or hostile graph is refused before the run's model is built
        from unetkit.run_layout import weights_dir

        check_onnx_matches_run(Path(args.onnx), weights_dir(runs[0], args.checkpoint))
        predictor: Predictor | EnsemblePredictor = Predictor.from_run(runs[0], checkpoint=args.checkpoint, device=device, fast=not args.no_fast,
                                       backend="onnx", onnx_path=args.onnx, **overrides)
    else:
        predictor = load_predictor(runs, checkpoint=args.checkpoint, device=device, fast=not args.no_fast,
                                   backend=args.backend, **overrides)
    if len(runs) > 1:
        print(f"ensemble of {len(runs)} models: {', '.join(str(r) for r in runs)}", flush=True)
    print(predictor.describe(), flush=True)
    if args.uncertainty and not predictor.with_uncertainty:
        raise ValueError("--uncertainty needs test-time augmentation: add --tta flips (or d4)")
    return predictor


def _print_outcomes(outcomes) -> int:  # type: ignore[no-untyped-def]
    """Print one line per input (written files on stdout, errors on stderr); returns the number of failures."""
    failures = 0
    for outcome in outcomes:
        if outcome.error is None:
            print(f"{outcome.path} -> {', '.join(p.name for p in outcome.written)}", flush=True)
        else:
            failures += 1
            # Reader errors start with the path already; others get it in front.
            text = str(outcome.error)
            where = "" if text.startswith(str(outcome.path)) else f"{outcome.path}: "
            print(f"unetkit predict: {where}{text}", file=sys.stderr, flush=True)
    return failures


def _window_threshold(args: argparse.Namespace) -> int:
    return 0 if args.windowed else args.window_threshold


def _request(args: argparse.Namespace, *, needs_probabilities: bool, compute_threads: int | None):  # type: ignore[no-untyped-def]
    """The :class:`~unetkit.infer.paths.PathRequest` the options describe."""
    from unetkit.infer.paths import PathRequest
    from unetkit.infer.pipeline import PipelineOptions

    pipeline = PipelineOptions(readers=args.io_threads, writers=args.io_threads, batch_images=args.batch_images,
                               compute_threads=compute_threads)
    return PathRequest(inputs=tuple(args.inputs), out=Path(args.out), prob=args.prob or needs_probabilities,
                       uncertainty=args.uncertainty, overlay=not args.no_overlay, skip_existing=args.skip_existing,
                       window_threshold=_window_threshold(args), sequential=args.sequential, pipeline=pipeline)


