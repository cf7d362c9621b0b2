"""``unetkit doctor [RUN] [--measure] [--json]``: what this machine is and what ``auto`` chooses on it.

Paste its output into a bug report: unetkit, Python, torch, oneDNN and ONNX Runtime versions, the device, the CPU
model, kind and flags, and the precision, layout and backend that ``auto`` picks for training and inference here,
each with its reason (:mod:`unetkit.doctor`). ``--measure`` times every choice on this machine (about a minute).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", nargs="?", default=None,
                        help="a run folder: report the inference backend auto picks for it (its cached graphs)")
    parser.add_argument("--measure", action="store_true",
                        help="also time each precision, layout and backend here on the default 2D network")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    from unetkit.doctor import diagnose, format_report

    report = diagnose(run=Path(args.run) if args.run else None, measure=args.measure)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0
