"""Argument types shared by several commands: each refuses a bad value with a one-line usage error."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """An integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def fraction(text: str) -> float:
    """A number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def add_backend_argument(parser: argparse.ArgumentParser) -> None:
    """``--backend auto|torch|onnx|int8`` (default auto), shared by predict, evaluate, suggest and serve."""
    from unetkit.infer.backend import BACKEND_CHOICES

    parser.add_argument("--backend", default="auto", choices=BACKEND_CHOICES,
                        help="what runs the network: auto (the fastest this machine has for the run: its accepted "
                             "int8 graph, ONNX Runtime where it is measured faster on this CPU kind, exported once "
                             "into RUN/best/model.onnx, else the torch fast path; printed with the reason), torch, "
                             "onnx or int8 (the graph of `unetkit export RUN --int8`)")
