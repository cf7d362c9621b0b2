"""``unetkit check DATA``: report counts, sizes, mask encodings and the classic dataset mistakes.

Exit status: 0 when nothing blocks training (warnings allowed), 1 when there are errors.
"""

from __future__ import annotations

import argparse
import json

from unetkit.commands._data_args import add_data_arguments, data_config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help="dataset folder or CSV/JSON list of image,mask pairs")
    parser.add_argument("--json", action="store_true", help="print a machine-readable JSON report")
    parser.add_argument("--max-samples", type=int, default=None, help="read only N samples, spread evenly")
    add_data_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from unetkit.data.checks import check_dataset

    if args.max_samples is not None and args.max_samples < 1:
        raise ValueError(f"--max-samples must be at least 1, got {args.max_samples}")
    report = check_dataset(data_config_from_args(args), max_samples=args.max_samples)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=_jsonable))
    else:
        print(report.to_text())
    return 1 if report.has_errors else 0


def _jsonable(value: object) -> object:
    # numpy scalars / tuples in the fingerprint
    if hasattr(value, "tolist"):
        return value.tolist()  # type: ignore[no-any-return]
    return str(value)
