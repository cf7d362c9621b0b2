"""The per-tile pipeline as an ONNX graph, and ONNX Runtime as a Predictor backend.

Graph contract (what ``unetkit export`` writes and ``Predictor(backend="onnx")`` runs):

* input ``image``: float32 ``(N, C, H, W)`` (2D) or ``(N, C, D, H, W)`` (3D), any N and any spatial size
  (the network pads internally to its stride and crops back). The pixels must already be **normalised
  with statistics of the whole image**, per channel, exactly as :func:`unetkit.data.normalize.normalize`
  does with the run's ``data.normalization`` (``zscore``: ``(x - mean_c) / max(std_c, 1e-6)`` with the
  population std; ``minmax``: ``(x - min_c) / max(max_c - min_c, 1e-6)``; ``none``: ``x`` as float32).
  Per-tile statistics would differ from training and from :class:`~unetkit.infer.predictor.Predictor`,
  which normalises the whole image before tiling; so normalisation is left outside the graph.
* output ``probabilities``: float32 ``(N, K, *spatial)``: softmax over the K classes (K >= 2), or the
  sigmoid of the single channel (K == 1). Labels are the argmax over K (K >= 2) or ``p > threshold``.

Tiling, blending and test-time augmentation stay outside the graph (they are the same numpy/torch code
for every backend).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

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
) -> dict[str, Any]:
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
        :func:`unetkit.export.export_onnx`'s report (``max_abs_diff`` per checked ``NxCx...`` shape).

    Raises:
        unetkit.export.ONNXCheckError: ONNX Runtime disagrees with PyTorch by more than ``atol``.
    """
    from unetkit.export import ParityCheck, export_onnx

    tile = tuple(int(t) for t in tile_size)
    example = (1, int(in_channels), *tile)
    shapes = None
    if check_sizes is not None:
        shapes = [(1 + i % 2, int(in_channels), *map(int, size)) for i, size in enumerate(check_sizes)]
    return export_onnx(
        ProbabilityModel(model), path, example_shape=example, check=ParityCheck(atol=atol, shapes=shapes),
        names=(INPUT_NAME, OUTPUT_NAME),
    )  # fmt: skip


class OnnxTileRunner:
    """Run an exported pipeline on batches of tiles: ``(B, C, *tile)`` torch -> ``(B, K, *tile)`` probabilities.

    Args:
        path: ``.onnx`` file following the graph contract in the module docstring.
        threads: ONNX Runtime intra-op threads (default: its own choice, one per physical core).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the graph does not have one ``image`` input and a ``probabilities`` output.
    """

    def __init__(self, path: str | os.PathLike[str], *, threads: int | None = None) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such ONNX model")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        # ONNX Runtime's workers spin after each run by default, waiting for the next one; in a Predictor the
        # next thing to run is blending, shifting and labelling in torch/numpy on the same cores, which the
        # spinning slows down (int8 graph, 512 x 512 slices, 2 cores: 34.6 -> 31.3 ms per image).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if inputs != [INPUT_NAME] or OUTPUT_NAME not in outputs:
            raise ValueError(
                f"{path}: expected an ONNX graph with input {INPUT_NAME!r} and output {OUTPUT_NAME!r} "
                f"(written by `unetkit export`), got inputs {inputs} and outputs {outputs}"
            )
        self.path = path

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(batch.detach().cpu().numpy(), dtype=np.float32)
        (probs,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: x})
        return torch.from_numpy(probs)


def export_run_graph(
    model: nn.Module, plan: Any, *, weights: Path, out: Path, checkpoint: str = "best", atol: float = 1e-4
) -> tuple[dict[str, Any], dict[str, Any]]:
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
        unetkit.export.ONNXCheckError: ONNX Runtime disagrees with PyTorch by more than ``atol``.
    """
    from unetkit._io import write_json_atomic
    from unetkit.export import build_report
    from unetkit.models.base import WEIGHTS_NAME

    channels = int(plan.model.kwargs.get("in_channels", plan.data.in_channels))
    tile = [int(t) for t in plan.infer.tile_size]
    odd = [(t // 32 + 1) * 32 + 17 for t in tile]  # not a multiple of the network's stride
    exported = export_pipeline(model, out, in_channels=channels, tile_size=tile, check_sizes=[tile, odd], atol=atol)
    run_dir = weights.parent if (weights.parent / "plan.yaml").is_file() else weights
    report = build_report(plan, exported, run_dir=run_dir, checkpoint=checkpoint, atol=atol,
                          weights=weights / WEIGHTS_NAME)
    write_json_atomic(out.with_name(out.name + ".json"), report)
    return exported, report
