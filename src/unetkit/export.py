"""The export stage's public names: ONNX export of segmentation models and of training runs.

The export core is shared with inference (``predict`` exports a run's graph on the fly), so it lives in the
runtime layer: :mod:`unetkit.runtime.onnx_export` (``export_onnx``, the parity check, the report beside an
exported run) and :mod:`unetkit.runtime.onnx_pipeline` (the network plus softmax / sigmoid as one graph).
int8 quantisation is :mod:`unetkit.quantize`.

Example:
    >>> model = unetkit.create_model("unet", in_channels=1, classes=2)
    >>> result = export_onnx(model, "unet.onnx", example_shape=(1, 1, 256, 256))
"""

from __future__ import annotations

from unetkit.runtime.onnx_export import (
    DEFAULT_OPSET,
    MIN_OPSET,
    ExportResult,
    ONNXCheckError,
    ParityCheck,
    build_report,
    check_onnx_matches_run,
    export_onnx,
    file_sha256,
    preprocessing_spec,
)
from unetkit.runtime.onnx_pipeline import export_pipeline, export_run_graph

__all__ = [
    "DEFAULT_OPSET",
    "ExportResult",
    "MIN_OPSET",
    "ONNXCheckError",
    "ParityCheck",
    "build_report",
    "check_onnx_matches_run",
    "export_onnx",
    "export_pipeline",
    "export_run_graph",
    "file_sha256",
    "preprocessing_spec",
]
