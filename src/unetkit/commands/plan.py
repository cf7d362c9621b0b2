"""``unetkit plan DATA``: print (or write) the plan unetkit would train with."""

from __future__ import annotations

import argparse
import sys

import yaml

from unetkit.commands._data_args import add_data_arguments, data_config_from_args
from unetkit.config import Plan, apply_overrides
from unetkit.data.options import DataConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help="dataset folder or CSV/JSON list")
    parser.add_argument(
        "--out", default=None, help="write the plan here (YAML, or JSON for .json); default stdout"
    )
    parser.add_argument("--time-budget", default=None, help="training time, e.g. 10m")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    add_data_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from unetkit.commands.train import parse_duration

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


def plan_from_data(
    data: DataConfig, *, device: str, time_budget_s: float | None, pretrained: bool | None = None
) -> Plan:
    """Fingerprint the dataset and derive a plan from it."""
    from unetkit.data.dataset import load_samples
    from unetkit.data.discovery import discover
    from unetkit.data.fingerprint import fingerprint
    from unetkit.train.plan import make_plan

    samples = discover(data).samples
    if not samples:
        raise ValueError(f"{data.root}: no image/mask pairs found")
    stats = fingerprint(load_samples(samples, data), data)
    stats["has_roi"] = any(s.roi is not None for s in samples)
    return make_plan(data, stats, device=device, time_budget_s=time_budget_s, pretrained=pretrained)
