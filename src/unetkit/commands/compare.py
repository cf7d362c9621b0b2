"""``unetkit compare DATA --models unet,unetplusplus,attention_unet --tta none,flips,d4 --out DIR``: train each
variant on the same split for the same budget, score each at each TTA level on the held-out part, and write
``DIR/report.md``, ``DIR/report.json`` and ``DIR/metrics.png`` (see :mod:`unetkit.compare`)."""

from __future__ import annotations

import argparse

from unetkit.commands._data_args import add_data_arguments, data_config_from_args
from unetkit.config import parse_duration


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help="labelled dataset folder or CSV/JSON list of image,mask pairs")
    parser.add_argument("--out", required=True, help="study folder: runs/<model>/, report.md, report.json, metrics.png")
    parser.add_argument("--models", default="unet,unetplusplus,attention_unet",
                        help="comma-separated model names; the first is the reference of the paired differences")
    parser.add_argument("--tta", default="none,flips,d4",
                        help="comma-separated TTA levels (none, flips, d4, d4+scales); differences are taken "
                             "against the first")
    parser.add_argument("--time-budget", default="10m", help="training time of each variant (and fold), e.g. 90s, 10m")
    parser.add_argument("--steps", type=int, default=0, metavar="N",
                        help="train every variant exactly N optimiser steps instead of --time-budget: a comparison "
                             "that does not depend on the machine's speed or load")
    parser.add_argument("--folds", type=int, default=0, metavar="K",
                        help="K-fold cross-validation (K >= 2): every image is scored out of fold and the fold "
                             "models' agreement is reported; 0 = the plan's validation split")
    parser.add_argument("--encoder", default=None, help="encoder of every variant: plain or a timm name (default: the "
                                                        "planner's)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override a plan field of every variant")
    parser.add_argument("--tolerance", type=float, default=2.0, metavar="PX",
                        help="boundary F1 tolerance in pixels (mm for volumes)")
    parser.add_argument("--shifts", default="1,4,16", help="pixel shifts of the shift-consistency metric")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present, else cpu), cpu or cuda[:N]")
    add_data_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from unetkit.compare import CompareOptions, run_study
    from unetkit.precision import resolve_device

    try:
        shifts = tuple(int(k) for k in _names(args.shifts))
    except ValueError:
        raise ValueError(f"--shifts must be comma-separated pixel counts, got {args.shifts!r}") from None
    options = CompareOptions(
        models=_names(args.models), tta=_names(args.tta), time_budget_s=parse_duration(args.time_budget),
        steps=args.steps,
        folds=args.folds, encoder=args.encoder, overrides=tuple(args.set), shifts=shifts,
        tolerance=args.tolerance, device=resolve_device(args.device),
    )  # fmt: skip
    report = run_study(data_config_from_args(args), args.out, options)
    for key in ("vs_first_model", "vs_first_tta"):
        for d in report["differences"][key]:
            if d["metric"] in ("boundary_f1", "shift_consistency", "dice"):
                print(d["text"])
    print(f"report: {args.out}/report.md")
    return 0

