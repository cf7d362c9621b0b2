"""The per-tile pipeline as an ONNX graph: the network plus softmax / sigmoid, exported and parity-checked.

This is what ``unetkit export`` writes and what ``Predictor(backend="onnx")`` exports on the fly (its
contract, input ``image`` and output ``probabilities``, is described in :mod:`unetkit.infer.onnx_backend`,
which runs such graphs). Tiling, blending and test-time augmentation stay outside the graph.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from unetkit.runtime.onnx_export import ExportResult
from unetkit.runtime.run import input_channels

INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"


class ProbabilityModel(nn.Module):
    """Wrap a segmentation network so that it returns probabilities: softmax (K >= 2) or sigmoid (K == 1).

    A network returning a list (deep supervision in training) contributes its first, full-resolution output.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.network(x)
        if isinstance(logits, (list, tuple)):
            logits = logits[0]
        logits = logits.float()
        if logits.shape[1] == 1:
            return torch.sigmoid(logits)
        # The softmax over classes written out: ONNX Runtime's Softmax on axis 1 of an NCHW tensor transposes it
        # to the last axis and back, which took 14-22 % of an int8 graph's time at 512 x 512; these five
        # element-wise passes over the same values cost a fraction of that (equal to torch.softmax within 1e-7).
        shifted = logits - logits.amax(dim=1, keepdim=True)
        e = shifted.exp()
        return e / e.sum(dim=1, keepdim=True)


def export_pipeline(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    in_channels: int,
    tile_size: Sequence[int],
    check_sizes: Sequence[Sequence[int]] | None = None,
    atol: float = 1e-4,
) -> ExportResult:
    """Export ``model`` wrapped in :class:`ProbabilityModel` to ONNX and check it against eager PyTorch.

    Args:
        model: the trained network (left unchanged; exported in eval mode).
        path: destination ``.onnx`` (written atomically, only after the check passed).
        in_channels: image channels C.
        tile_size: spatial tile size used to trace the graph (spatial axes stay dynamic).
        check_sizes: spatial sizes checked in ONNX Runtime (default: the tile with batch 1, and an odd size
            that is not a multiple of 32 with batch 2).
        atol: largest allowed absolute difference on probabilities.

    Returns:
        :func:`unetkit.runtime.onnx_export.export_onnx`'s :class:`~unetkit.runtime.onnx_export.ExportResult`
        (``max_abs_diff`` per checked ``NxCx...`` shape).

    Raises:
        unetkit.runtime.onnx_export.ONNXCheckError: ONNX Runtime disagrees with PyTorch by more than ``atol``.
    """
    from unetkit.runtime.onnx_export import ParityCheck, export_onnx

    tile = tuple(int(t) for t in tile_size)
    example = (1, int(in_channels), *tile)
    shapes = None
    if check_sizes is not None:
        shapes = [(1 + i % 2, int(in_channels), *map(int, size)) for i, size in enumerate(check_sizes)]
    return export_onnx(
        ProbabilityModel(model), path, example_shape=example, check=ParityCheck(atol=atol, shapes=shapes),
        names=(INPUT_NAME, OUTPUT_NAME),
    )  # fmt: skip


def export_run_graph(
    model: nn.Module, plan: Any, *, weights: Path, out: Path, checkpoint: str = "best", atol: float = 1e-4
) -> tuple[ExportResult, dict[str, Any]]:
    """Export a run's network to ``out`` as ``unetkit export`` does and write its report ``<out>.json`` beside it.

    The graph is checked in ONNX Runtime at the plan's tile (batch 1) and at an odd size that is not a multiple
    of the network's stride (batch 2) before anything is written; both files are written atomically.

    Args:
        model: the run's network, loaded from ``weights``.
        plan: the run's :class:`~unetkit.config.Plan`.
        weights: the checkpoint folder (its weights' SHA-256 goes into the report).
        out: destination ``.onnx``.
        checkpoint: the checkpoint's name, for the report.
        atol: largest allowed absolute difference on probabilities.

    Returns:
        ``(exported, report)``: :func:`export_pipeline`'s result and the report written to ``<out>.json``.

    Raises:
        unetkit.runtime.onnx_export.ONNXCheckError: ONNX Runtime disagrees with PyTorch by more than ``atol``.
    """
    from unetkit._io import write_json_atomic
    from unetkit.models.base import WEIGHTS_NAME
    from unetkit.runtime.onnx_export import build_report

    channels = input_channels(plan)  # the options the model was built with
    tile = [int(t) for t in plan.infer.tile_size]
    odd = [(t // 32 + 1) * 32 + 17 for t in tile]  # not a multiple of the network's stride
    exported = export_pipeline(model, out, in_channels=channels, tile_size=tile, check_sizes=[tile, odd], atol=atol)
    run_dir = weights.parent if (weights.parent / "plan.yaml").is_file() else weights
    report = build_report(plan, exported, run_dir=run_dir, checkpoint=checkpoint, atol=atol,
                          weights=weights / WEIGHTS_NAME)
    write_json_atomic(out.with_name(out.name + ".json"), report)
    return exported, report


__all__ = ["INPUT_NAME", "OUTPUT_NAME", "ProbabilityModel", "export_pipeline", "export_run_graph"]
