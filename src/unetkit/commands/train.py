"""``unetkit train DATA --out RUN``: plan from the data (or load a plan), then train."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from unetkit.choices import PRECISIONS
from unetkit.commands._argtypes import positive_int
from unetkit.commands._data_args import add_data_arguments, data_config_from_args
from unetkit.config import Plan, apply_overrides, parse_duration

if TYPE_CHECKING:
    from unetkit.data.dataset import LoadedSample


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help="dataset folder or CSV/JSON list of image,mask pairs")
    parser.add_argument("--out", required=True, help="run directory to create")
    parser.add_argument(
        "--plan", default=None, help="use this plan (YAML/JSON) instead of planning from the data"
    )
    parser.add_argument("--model", default=None, help="registered model name (see unetkit.list_models())")
    parser.add_argument(
        "--encoder",
        default=None,
        help="encoder: plain (trained from scratch) or a timm backbone name; the default is the planner's "
        "(ImageNet-pretrained tf_efficientnet_lite0 for 2D images when its weights are installed)",
    )
    parser.add_argument(
        "--encoder-weights", default=None, help="pretrained encoder weights file (or hub name)"
    )
    parser.add_argument("--time-budget", default=None, help="training time, e.g. 10m, 90s, 1h")
    parser.add_argument(
        "--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", help="override a plan field"
    )
    parser.add_argument(
        "--folds",
        type=int,
        default=None,
        metavar="K",
        help="k-fold cross-validation over groups (K >= 2; needs --fold): the validation part is "
        "one fold instead of train.val_fraction",
    )
    parser.add_argument(
        "--fold",
        default=None,
        metavar="N|all",
        help="which fold to train (0..K-1), or 'all': every fold one after another into "
        "RUN/fold_0..RUN/fold_{K-1}, plus RUN/cv.json (each fold's best validation Dice and "
        "the mean); the time budget applies to each fold",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue a killed run exactly where it stopped"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present, else cpu), cpu or cuda[:N]")
    parser.add_argument("--precision", default=None, choices=PRECISIONS,
                        help="what training computes in (default: the plan's, auto = bf16 autocast where the CPU has "
                             "native bf16 (AVX-512 BF16 / AMX), fp16 with loss scaling on CUDA, else fp32); "
                             "the choice and its reason are printed and recorded in RUN/state.json")
    parser.add_argument("--labels", type=positive_int, default=None, metavar="N",
                        help="train on N labelled cases of the training side, drawn with --labels-seed (the "
                             "validation part stays the same, so runs with different N are comparable; a larger N "
                             "keeps every case of a smaller one); recorded in RUN/plan.yaml as train.labels")
    parser.add_argument("--labels-seed", type=int, default=None, metavar="S",
                        help="seed of the --labels draw (default 0)")
    parser.add_argument("--labels-file", default=None, metavar="LIST.txt",
                        help="train on exactly these training cases: one key or file name per line (e.g. "
                             "suggestions.csv's files once labelled); recorded as train.labels_keys")
    parser.add_argument("--unlabelled", nargs="+", default=None, metavar="DIR",
                        help="folders of images without masks to learn from as well (semi-supervised: the EMA model "
                             "labels them and the model learns those labels where the EMA is confident, see "
                             "train.unlabelled_threshold / _weight / _rampup); images that are also in the labelled "
                             "set are reported and skipped; sets train.ema to 0.99 when the plan has none")
    add_data_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from unetkit.train import distributed

    ctx = distributed.context_from_env()
    try:
        return _run(args, quiet=not ctx.is_main)
    finally:
        distributed.teardown(ctx)


def _run(args: argparse.Namespace, *, quiet: bool) -> int:
    """Train one run or every fold; ``quiet`` on the other processes of a torchrun job (rank 0 reports)."""
    from unetkit.run_layout import fold_dir, is_cv_parent
    from unetkit.runtime.run import encoder_name
    from unetkit.train.loop import train

    say = (lambda *a, **k: None) if quiet else print
    out = Path(args.out)
    if args.resume and is_cv_parent(out):
        return _run_folds(Plan.load(fold_dir(out, 0) / "plan.yaml"), out, args, say=say)
    samples: list[LoadedSample] | None = None  # read while planning; a resumed run reads its data itself
    if args.resume:
        plan = Plan.load(out / "plan.yaml")
        if args.precision:
            plan = apply_overrides(plan, [f"train.precision={args.precision}"])
    else:
        plan, samples = plan_with_samples(args)
        say(
            f"plan: {plan.model.name} ({encoder_name(plan)}), patch {plan.train.patch_size}, "
            f"batch {plan.train.batch_size}, budget {plan.train.time_budget_s or '-'} s, steps {plan.train.steps or 'auto'}"
        )
        if plan.train.labels or plan.train.labels_keys:
            chosen = (f"the {len(plan.train.labels_keys)} listed" if plan.train.labels_keys
                      else f"{plan.train.labels} (seed {plan.train.labels_seed})")
            say(f"labels: training on {chosen} case(s) of the training side; validation unchanged")
        if plan.model.reason:
            say(f"encoder: {plan.model.reason}")
        if plan.train.unlabelled:
            say(unlabelled_text(plan))
    if args.fold == "all":
        return _run_folds(plan, out, args, say=say)
    # Planned from the data: the trainer takes the samples the check and the fingerprint read (each file once).
    result = train(plan, out, resume=args.resume, overwrite=args.overwrite, device=args.device, loaded=samples)
    say(
        f"trained {result.steps} steps in {result.seconds:.0f} s; best validation Dice {result.best_score:.4f}; run in {out}"
    )
    if result.alignment is not None:
        say(alignment_text(result.alignment))
    return 0


def unlabelled_text(plan: Plan) -> str:
    """Lines on the unlabelled folders a plan learns from and the labelled images found among them."""
    cfg = plan.train
    lines = [f"unlabelled: {', '.join(cfg.unlabelled)} (mean teacher: EMA {cfg.ema}, confidence >= "
             f"{cfg.unlabelled_threshold}, weight {cfg.unlabelled_weight} ramped over {cfg.unlabelled_rampup:.0%} of "
             "the steps)"]
    if cfg.unlabelled_skipped:
        lines.append(f"unlabelled: {len(cfg.unlabelled_skipped)} image(s) there are also in the labelled set (same "
                     f"path or same content) and are not used as unlabelled: {', '.join(cfg.unlabelled_skipped[:5])}"
                     + (" ..." if len(cfg.unlabelled_skipped) > 5 else ""))
    return "\n".join(lines)


def alignment_text(alignment: tuple[list[float], float, float]) -> str:
    """One line on what the end-of-training alignment step decided."""
    shift, before, after = alignment
    if not shift:
        return "alignment: predictions already fit the validation labels best unshifted (infer.shift = [])"
    px = ", ".join(f"{s:+.2f}" for s in shift)
    return f"alignment: predictions move by ({px}) px (validation Dice {before:.4f} -> {after:.4f}); see infer.shift"


def _run_folds(plan: Plan, out: Path, args: argparse.Namespace, *, say=print) -> int:  # type: ignore[no-untyped-def]
    from unetkit.train.cv import train_folds

    result = train_folds(plan, out, resume=args.resume, overwrite=args.overwrite, device=args.device)
    dice = "  ".join(f"{d:.4f}" for d in result.fold_dice)
    say(
        f"cross-validation: best validation Dice per fold {dice}; mean {result.mean_dice:.4f}; "
        f"summary in {out / 'cv.json'}"
    )
    return 0


def fold_overrides(folds: int | None, fold: str | None) -> list[str]:
    """``--folds K --fold N|all`` -> plan overrides (``train.folds``, and ``train.fold`` unless ``all``).

    Raises:
        ValueError: one flag without the other, K below 2, or N not an integer in 0..K-1.
    """
    if folds is None and fold is None:
        return []
    if folds is None or fold is None:
        raise ValueError(
            "--folds K and --fold N|all go together (e.g. --folds 5 --fold 0, or --folds 5 --fold all)"
        )
    if folds < 2:
        raise ValueError(f"--folds must be at least 2, got {folds}")
    if fold == "all":
        return [f"train.folds={folds}"]
    if not fold.isdigit() or int(fold) >= folds:
        raise ValueError(f"--fold must be 'all' or an integer in 0..{folds - 1}, got {fold!r}")
    return [f"train.folds={folds}", f"train.fold={int(fold)}"]


def build_plan(args: argparse.Namespace) -> Plan:
    """Plan from the data (or a plan file), then the CLI's model flags and ``--set`` overrides on top."""
    return plan_with_samples(args)[0]


def plan_with_samples(args: argparse.Namespace) -> tuple[Plan, list[LoadedSample] | None]:
    """:func:`build_plan`, and the samples it read when it planned from the data
    (:func:`unetkit.train.request.plan_for_request`)."""
    from unetkit.train.request import PlanRequest, plan_for_request

    # Every --set value (and --folds / --fold) is checked against its field's type and bounds before any data is
    # read (a typo must not cost a dataset load).
    folds = fold_overrides(getattr(args, "folds", None), getattr(args, "fold", None))
    apply_overrides(Plan(), list(args.set) + folds)
    request = PlanRequest(
        data=None if args.plan else data_config_from_args(args),
        plan_file=args.plan,
        device=args.device,
        time_budget_s=parse_duration(args.time_budget) if args.time_budget else None,
        model=args.model,
        encoder=args.encoder,
        encoder_weights=args.encoder_weights,
        precision=args.precision,
        overrides=(*args.set, *folds),
        labels=getattr(args, "labels", None),
        labels_seed=getattr(args, "labels_seed", None),
        labels_file=getattr(args, "labels_file", None),
        unlabelled=tuple(getattr(args, "unlabelled", None) or ()),
    )
    return plan_for_request(request)
