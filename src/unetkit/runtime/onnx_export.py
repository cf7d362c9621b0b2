"""ONNX export of segmentation models (or any module mapping one image batch to tensors).

The graph is captured with the ``torch.export``-based exporter (``torch.onnx.export(..., dynamo=True)``),
with dynamic batch and spatial axes, and checked against eager PyTorch in ONNX Runtime at two input
sizes before the file appears on disk.

Example:
    >>> model = unetkit.create_model("unet", in_channels=1, classes=2)
    >>> result = export_onnx(model, "unet.onnx", example_shape=(1, 1, 256, 256))
    >>> result.max_abs_diff  # {'1x1x256x256': 1.2e-06, '2x1x280x280': 1.4e-06}
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn as nn

from unetkit._io import atomic_path
from unetkit.models.static_padding import with_static_same_padding

if TYPE_CHECKING:
    from unetkit.config import Plan
    from unetkit.data.options import DataConfig

# The torch.export-based exporter implements ONNX opset 18 and newer; asking for 17 makes it try a
# version down-conversion that fails for Pad (used by the models' internal padding).
MIN_OPSET = 18
DEFAULT_OPSET = 18
DEFAULT_STRIDE = 32
SPATIAL_AXIS_NAMES = {2: ("height", "width"), 3: ("depth", "height", "width")}


class ONNXCheckError(RuntimeError):
    """The exported graph disagrees with eager PyTorch beyond the tolerance."""


@dataclass(frozen=True)
class ParityCheck:
    """How :func:`export_onnx` compares ONNX Runtime with eager PyTorch.

    Attributes:
        atol: largest allowed absolute difference between the two outputs.
        shapes: input shapes to compare on; default: the example shape and a second shape with batch + 1
            and, with dynamic spatial axes, sizes that are not a multiple of the model's output stride
            (``model.encoder.output_stride`` if it exists, else 32).
    """

    atol: float = 1e-4
    shapes: Sequence[Sequence[int]] | None = None


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` wrote and measured.

    Attributes:
        path: the ``.onnx`` file.
        opset: the graph's default-domain opset.
        file_size_bytes: the file's size.
        input_name: the graph's input.
        output_names: the graph's outputs (several outputs get ``_0``, ``_1``...).
        dynamic_axes: axis index -> name of each dynamic input axis (``batch``, ``height``...).
        max_abs_diff: ``"NxCxHxW"`` of each checked shape -> the largest absolute difference between ONNX
            Runtime and eager PyTorch (empty without a check).
    """

    path: str
    opset: int
    file_size_bytes: int
    input_name: str
    output_names: list[str]
    dynamic_axes: dict[int, str]
    max_abs_diff: dict[str, float]


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    example_shape: Sequence[int],
    opset: int = DEFAULT_OPSET,
    dynamic_hw: bool = True,
    check: ParityCheck | None = ParityCheck(),  # noqa: B008  (frozen, so a shared default is safe)
    names: tuple[str, str] = ("image", "logits"),
) -> ExportResult:
    """Export ``model`` to ONNX with a dynamic batch (and spatial) size; optionally verify it.

    Args:
        model: any module whose ``forward(x)`` takes one ``(N, C, *spatial)`` tensor and returns a tensor
            (or a tuple/list of tensors): a registered segmentation model, or a wrapper around one.
            It is exported in eval mode; its train/eval mode is restored afterwards.
        path: destination ``.onnx`` file, written atomically (temp file + rename) and only after the check.
        example_shape: ``(N, C, H, W)`` or ``(N, C, D, H, W)`` used to trace the graph (N=1 is traced
            as N=2 so that the batch axis stays dynamic).
        opset: ONNX opset (>= 18, the oldest the exporter implements).
        dynamic_hw: make the spatial axes dynamic (otherwise only the batch axis is).
            Timm layers with TF-style "same" padding inside a segmentation model's encoder are traced with
            fixed pads (:func:`unetkit.models.static_padding.with_static_same_padding`): exact there, and the
            exporter no longer spends minutes on their size arithmetic.
        check: run ONNX Runtime and compare with eager PyTorch (:class:`ParityCheck`); None: no check.
        names: graph input and output names (several outputs get ``_0``, ``_1``...).

    Returns:
        :class:`ExportResult`; its ``max_abs_diff`` maps ``"NxCxHxW"`` of each checked shape to the largest
        absolute difference (empty when ``check`` is None).

    Raises:
        TypeError: ``model`` is not an ``nn.Module``, or returns something other than tensors.
        ValueError: bad arguments (shape, opset, tolerance).
        RuntimeError: the exporter could not capture the model (the message names the model).
        ONNXCheckError: ONNX Runtime and eager outputs differ by more than ``atol``, or in shape.
        ModuleNotFoundError: ``onnxscript`` (export) or ``onnxruntime`` (check) is not installed.
    """
    example_shape = _check_shape(example_shape, "example_shape")
    _check_args(model, opset=opset, atol=check.atol if check is not None else 1.0)
    spatial_dims = len(example_shape) - 2
    if spatial_dims not in SPATIAL_AXIS_NAMES:
        raise ValueError(f"example_shape must be (N, C, H, W) or (N, C, D, H, W), got {example_shape}")
    shapes = _parity_shapes(model, example_shape, check, dynamic_hw=dynamic_hw)
    input_name, output_name = names
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    modes = {m: m.training for m in model.modules()}  # restored exactly (e.g. a frozen encoder)
    model.eval()
    try:
        # TF-style "same" layers (Lite0) compute pads from the symbolic size, which the exporter needs minutes
        # to reason about; inside the models' padding they are constants. The check compares with ``model``.
        traced, _ = with_static_same_padding(model)
        program = _capture(traced, example_shape, opset=opset, dynamic_hw=dynamic_hw, input_name=input_name)
        output_names = _rename_outputs(program, output_name)
        atol = check.atol if check is not None else 0.0
        diffs = _save_checked(program, path, model=model, shapes=shapes, atol=atol)
    finally:
        for module, training in modes.items():
            module.training = training
    return ExportResult(
        path=str(path),
        opset=int(program.model.opset_imports.get("", opset)),
        file_size_bytes=path.stat().st_size,
        input_name=input_name,
        output_names=output_names,
        dynamic_axes=_dynamic_axes(spatial_dims, dynamic_hw=dynamic_hw),
        max_abs_diff=diffs,
    )


def _parity_shapes(
    model: nn.Module, example_shape: tuple[int, ...], check: ParityCheck | None, *, dynamic_hw: bool
) -> list[tuple[int, ...]]:
    if check is None:
        return []
    if check.shapes is not None:
        return [_check_shape(s, "check shapes entry") for s in check.shapes]
    return _default_check_shapes(model, example_shape, dynamic_hw=dynamic_hw)


def _dynamic_axes(spatial_dims: int, *, dynamic_hw: bool) -> dict[int, str]:
    axes = {0: "batch"}
    if dynamic_hw:
        axes.update({2 + i: n for i, n in enumerate(SPATIAL_AXIS_NAMES[spatial_dims])})
    return axes


def _capture(
    model: nn.Module, example_shape: tuple[int, ...], *, opset: int, dynamic_hw: bool, input_name: str
):
    try:
        import onnxscript  # noqa: F401  (the exporter's translation library)
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            "ONNX export needs onnxscript and onnx: pip install onnx onnxscript"
        ) from err
    # torch.export specialises axes whose example size is 1, so a batch of 1 is traced as 2.
    trace_shape = (max(example_shape[0], 2), *example_shape[1:])
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    example = torch.randn(trace_shape, device=device)
    spatial_names = SPATIAL_AXIS_NAMES[len(example_shape) - 2]
    axes: dict[int, Any] = {0: torch.export.Dim("batch")}
    if dynamic_hw:
        axes.update({2 + i: torch.export.Dim(n) for i, n in enumerate(spatial_names)})
    with warnings.catch_warnings():
        # AttentionGate keeps its last coefficients on the module for visualisation; torch.export warns
        # that the attribute was assigned while tracing. It does not enter the graph, so it is harmless.
        warnings.filterwarnings(
            "ignore", message=r"The tensor attributes .*coefficients.* were assigned during export"
        )
        try:
            return torch.onnx.export(
                model,
                (example,),
                None,
                dynamo=True,
                opset_version=opset,
                input_names=[input_name],
                dynamic_shapes=(axes,),
                verbose=False,
                optimize=True,
            )
        except Exception as err:  # the exporter raises many error types; say which model failed
            raise RuntimeError(f"ONNX export of {type(model).__name__} failed: {err}") from err


def _save_checked(
    program: Any, path: Path, *, model: nn.Module, shapes: list[tuple[int, ...]], atol: float
) -> dict[str, float]:
    """Save to a temp file beside ``path``, check it on ``shapes`` (none: no check), then rename."""
    with atomic_path(path) as tmp:
        # One self-contained file (no external data), so the rename publishes all of it.
        program.save(str(tmp), external_data=False)
        diffs = _check_against_eager(model, str(tmp), shapes, atol=atol) if shapes else {}
    return diffs


def _rename_outputs(program: Any, output_name: str) -> list[str]:
    outputs = program.model.graph.outputs
    names = [output_name] if len(outputs) == 1 else [f"{output_name}_{i}" for i in range(len(outputs))]
    for value, name in zip(outputs, names, strict=True):
        value.name = name
    return names


def _check_against_eager(
    model: nn.Module, onnx_path: str, shapes: list[tuple[int, ...]], *, atol: float
) -> dict[str, float]:
    try:
        import onnxruntime as ort
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            "the ONNX check needs onnxruntime: pip install onnxruntime, or pass check=False"
        ) from err
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    diffs: dict[str, float] = {}
    for shape in shapes:
        x = torch.randn(shape, generator=generator)
        with torch.inference_mode():
            expected = [t.float().cpu().numpy() for t in _as_list(model(x.to(device)))]
        key = "x".join(map(str, shape))
        try:
            got = session.run(None, {input_name: x.numpy()})
        except Exception as err:  # e.g. a size baked into the graph at trace time
            raise ONNXCheckError(f"input {key}: ONNX Runtime failed on the exported graph: {err}") from err
        if len(got) != len(expected) or any(g.shape != e.shape for g, e in zip(got, expected, strict=True)):
            raise ONNXCheckError(
                f"input {key}: ONNX Runtime output shapes {[g.shape for g in got]} != eager {[e.shape for e in expected]}"
            )
        diffs[key] = max(
            float(np.max(np.abs(g - e))) if e.size else 0.0 for g, e in zip(got, expected, strict=True)
        )
        if not diffs[key] <= atol:  # also catches NaN
            raise ONNXCheckError(
                f"input {key}: ONNX Runtime differs from eager by {diffs[key]:.3g} > atol={atol:g}"
            )
    return diffs


def _as_list(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)) and all(isinstance(t, torch.Tensor) for t in out):
        return list(out)
    raise TypeError(f"the model must return a tensor or a list/tuple of tensors, got {type(out).__name__}")


def _default_check_shapes(
    model: nn.Module, example_shape: tuple[int, ...], *, dynamic_hw: bool
) -> list[tuple[int, ...]]:
    n, c, *spatial = example_shape
    if not dynamic_hw:
        return [example_shape, (n + 1, c, *spatial)]
    stride = int(getattr(getattr(model, "encoder", None), "output_stride", DEFAULT_STRIDE))
    # Next multiple above, plus half a stride plus one: never a multiple of the stride (for stride > 1).
    other = [(s // stride + 1) * stride + stride // 2 + 1 for s in spatial]
    return [example_shape, (n + 1, c, *other)]


def _check_shape(shape: Sequence[int], what: str) -> tuple[int, ...]:
    try:
        out = tuple(int(s) for s in shape)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what} must be a sequence of positive ints, got {shape!r}") from err
    if len(out) < 3 or any(s < 1 for s in out):
        raise ValueError(f"{what} must be (N, C, *spatial) with positive sizes, got {shape!r}")
    return out


def _check_args(model: nn.Module, *, opset: int, atol: float) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if opset < MIN_OPSET:
        raise ValueError(
            f"opset {opset} is not supported: torch's ONNX exporter emits opset {MIN_OPSET} or newer "
            "(older runtimes: onnxruntime >= 1.14 reads opset 18)"
        )
    if not atol > 0:
        raise ValueError(f"atol must be > 0, got {atol}")


# -- the report written beside an exported run (<out>.json) ---------------------------------------------


def build_report(plan: Plan, exported: ExportResult, *, run_dir: Path, checkpoint: str, atol: float,
                 weights: Path) -> dict[str, Any]:
    """Everything a consumer of the graph needs, as JSON-ready data (``cpu``: this machine's precision flags)."""
    from unetkit._version import __version__
    from unetkit.precision import cpu_flags
    from unetkit.runtime.run import input_channels, output_classes

    kwargs = plan.model.kwargs
    classes = output_classes(plan)
    dims = int(plan.data.spatial_dims)
    spatial = ["depth", "height", "width"][-dims:]
    channels = input_channels(plan)
    return {
        "format": "onnx",
        "model_file": Path(exported.path).name,
        "opset": exported.opset,
        "file_size_bytes": exported.file_size_bytes,
        "unetkit_version": __version__,
        "run": str(run_dir),
        "checkpoint": checkpoint,
        "weights_sha256": file_sha256(weights),
        "model": {"name": plan.model.name, "kwargs": kwargs},
        "input": {
            "name": exported.input_name,
            "dtype": "float32",
            "shape": ["batch", channels, *spatial],
            "dynamic_axes": ["batch", *spatial],
            "meaning": "a tile of the image AFTER normalising the WHOLE image (see preprocessing)",
        },
        "output": {
            "name": exported.output_names[0],
            "dtype": "float32",
            "shape": ["batch", classes, *spatial],
            "meaning": "sigmoid of the single channel" if classes == 1 else "softmax over the classes (axis 1)",
        },
        "preprocessing": preprocessing_spec(plan.data),
        "labels": (f"label = probability > {plan.infer.threshold}" if classes == 1
                   else "label = argmax over axis 1 of the blended probabilities"),
        "shift": {
            "pixels": [float(s) for s in plan.infer.shift],
            "meaning": "before labelling, move the probabilities by these pixels per spatial axis (linear "
                       "interpolation, edge values repeated; unetkit.runtime.alignment.shift_tiles); [] = none",
        },
        "tiling": {
            "tile_size": list(plan.infer.tile_size),
            "overlap": plan.infer.overlap,
            "blend": plan.infer.blend,
            "note": "tiles are blended outside the graph (unetkit.runtime.tiling); any tile size works",
        },
        "parity": {
            "reference": "PyTorch eager fp32 of the same weights, softmax/sigmoid applied",
            "atol": atol,
            "max_abs_diff": exported.max_abs_diff,
        },
        "cpu": cpu_flags(),
    }


def preprocessing_spec(data: DataConfig) -> dict[str, Any]:
    """How to normalise a whole image before tiling it into the graph, as the report states it."""
    mode = data.normalization
    if mode == "dataset":
        return {
            "normalization": mode,
            "formula": "x_c = (raw_c - mean[c]) / max(std[c], 1e-6), the same for every image",
            "mean": list(data.intensity_mean),
            "std": list(data.intensity_std),
            "statistics": "per channel over the training dataset (stored in the run's plan)",
        }
    formulas = {
        "zscore": "x_c = (raw_c - mean_c) / max(std_c, 1e-6); mean_c, std_c (population) over all pixels of channel c",
        "minmax": "x_c = (raw_c - min_c) / max(max_c - min_c, 1e-6); min_c, max_c over all pixels of channel c",
        "none": "x = raw as float32",
    }
    return {
        "normalization": mode,
        "formula": formulas.get(mode, mode),
        "statistics": "per channel over the whole image (not per tile), as unetkit.data.normalize.normalize",
    }


def check_onnx_matches_run(onnx: Path, checkpoint: Path) -> None:
    """With the export report beside the graph, refuse a graph exported from other weights than the run's.

    Raises:
        ValueError: the report's ``weights_sha256`` is not that of ``checkpoint``'s weights file, or the report is
            unreadable (too large, not JSON: see :mod:`unetkit.untrusted`).
    """
    from unetkit.models.base import WEIGHTS_NAME
    from unetkit.untrusted import load_json_limited

    report = onnx.with_name(onnx.name + ".json")
    if not report.is_file():
        return  # a graph exported by other means: the user vouches for it
    raw = load_json_limited(report, what="export report", max_bytes=16 * 2**20)
    exported = raw.get("weights_sha256") if isinstance(raw, dict) else None
    if exported and exported != file_sha256(checkpoint / WEIGHTS_NAME):
        raise ValueError(f"{onnx} was exported from other weights than {checkpoint} (see {report.name})")


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
