"""``unetkit export`` of the planner's default network (U-Net with the TF-padded EfficientNet-Lite0 encoder).

Its strided layers compute TF "same" pads from the input size; traced with dynamic height and width, that
arithmetic kept the exporter busy for over nine minutes. They are traced with fixed pads now
(:mod:`unetkit.models.static_padding`), and the graph must still match PyTorch at any size.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _run_factory import make_run
from PIL import Image

from unetkit.cli import main
from unetkit.models.base import load_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

ISBI_PNG = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "isbi2012_em_membrane" / "images" / "7.png"


def test_default_lite0_run_exports_with_dynamic_sizes_and_matches_pytorch(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", encoder="tf_efficientnet_lite0", tile=64)
    out = tmp_path / "onnx" / "model.onnx"
    out.parent.mkdir()
    assert main(["export", str(run), "--format", "onnx", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.onnx", "model.onnx.json"]
    report = json.loads((out.parent / "model.onnx.json").read_text())
    assert report["model"]["kwargs"]["encoder"] == "tf_efficientnet_lite0"
    diffs = report["parity"]["max_abs_diff"]
    assert sorted(diffs) == ["1x1x64x64", "2x1x113x113"] and all(0 <= d < 1e-4 for d in diffs.values())
    assert set(report["cpu"]) >= {"avx2", "avx512_vnni", "avx512_bf16", "amx_int8", "avx_vnni"}

    proto = onnx.load(str(out))
    assert [d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim] == ["batch", "", "height", "width"]
    # The dynamic pads were ceil(size / stride) arithmetic; with fixed pads no Ceil is left in the graph.
    assert "Ceil" not in {n.op_type for n in proto.graph.node}

    # A real image at a size neither the trace nor the check used (odd, not a multiple of 32), batch 3.
    if not ISBI_PNG.exists():
        pytest.skip(f"dataset file {ISBI_PNG} is not available")
    crop = np.asarray(Image.open(ISBI_PNG), dtype=np.float64)[100:171, 50:149]
    x = np.stack([(crop - crop.mean()) / crop.std(), -crop / 255, crop / 255])[:, None].astype(np.float32)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (got,) = session.run(["probabilities"], {"image": x})
    model = load_model(run / "best").eval()
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(x)), dim=1).numpy()
    assert got.shape == (3, 2, 71, 99)
    assert np.abs(got - expected).max() < 1e-4
