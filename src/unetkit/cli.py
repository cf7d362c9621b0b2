"""``unetkit`` command line: a thin dispatcher; each sub-command lives in ``unetkit.commands``."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

# name -> module in unetkit.commands providing `add_arguments(parser)` and `run(args) -> int`.
COMMANDS = {
    "check": "Check a dataset for the classic mistakes before training.",
    "plan": "Derive a training plan (YAML) from a dataset's fingerprint.",
    "train": "Train a segmentation model.",
    "evaluate": "Score a trained run on a labelled dataset.",
    "predict": "Predict masks for images of any size.",
    "export": "Export a run to ONNX with a parity check.",
    "serve": "Serve a run over HTTP with a small web page.",
    "diffusion": "Train a diffusion U-Net or sample from one.",
    "demo": "Build every registered model and time it on a real image.",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unetkit", description="U-Net segmentation toolkit.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        module = _command_module(name)
        if module is None:
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # albumentations otherwise asks PyPI for a newer version on import (slow offline, and a warning).
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, KeyError, RuntimeError) as err:
        # Library errors carry a message meant for the user; no traceback for them.
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"unetkit {args.command}: error: {message}", file=sys.stderr)
        return 2


def _command_module(name: str):  # type: ignore[no-untyped-def]
    try:
        return importlib.import_module(f"unetkit.commands.{name}")
    except ModuleNotFoundError as err:
        if err.name == f"unetkit.commands.{name}":
            return None  # not built yet
        raise


if __name__ == "__main__":
    sys.exit(main())
