"""``unetkit plan DATA``: print (or write) the plan unetkit would train with."""

from __future__ import annotations

import argparse
import sys

import yaml

from unetkit.commands._data_args import add_data_arguments, data_config_from_args
from unetkit.config import apply_overrides, parse_duration


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help="dataset folder or CSV/JSON list")
    parser.add_argument(
        "--out", default=None, help="write the plan here (YAML, or JSON for .json); default stdout"
    )
    parser.add_argument("--time-budget", default=None, help="training time, e.g. 10m")
    parser.add_argument("--device", default="auto", help="device the plan is sized for: auto (CUDA when present, else cpu), cpu or cuda[:N]")
    parser.add_argument(
        "--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", help="override a plan field (repeatable)"
    )
    add_data_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from unetkit.train.plan import plan_from_data

    budget = parse_duration(args.time_budget) if args.time_budget else None
    plan = apply_overrides(
        plan_from_data(data_config_from_args(args), device=args.device, time_budget_s=budget), args.set
    )
    if args.out:
        plan.save(args.out)
        print(f"plan written to {args.out}")
    else:
        yaml.safe_dump(plan.to_dict(), sys.stdout, sort_keys=False)
    return 0
