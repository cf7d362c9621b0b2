"""The Deepness (QGIS) metadata in exported ONNX files, read back as Deepness reads it: ONNX Runtime's
``custom_metadata_map`` with JSON values, class ids consecutive from 0."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from unetkit.config import DataConfig, InferConfig, Plan  # noqa: E402
from unetkit.onnx_metadata import deepness_metadata, read_metadata, write_metadata  # noqa: E402


def _identity_model(path: Path) -> None:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, "h", "w"])
    y = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3, "h", "w"])
    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["probabilities"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    model.metadata_props.add(key="producer_note", value="kept")
    onnx.save(model, str(path))


def deepness_view(path: Path) -> dict:
    """What Deepness' ModelBase reads: the custom metadata map, each value json.loads'ed."""
    meta = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    return {k: json.loads(v) if k != "producer_note" else v for k, v in meta.items()}


def test_dataset_normalised_run_carries_class_names_tiles_and_standardisation(tmp_path: Path) -> None:
    plan = Plan(
        data=DataConfig(classes=["background", "Building", "Water"], normalization="dataset",
                        intensity_mean=[102.0, 51.0, 25.5], intensity_std=[51.0, 25.5, 12.75]),
        infer=InferConfig(tile_size=[384, 384], overlap=0.25, threshold=0.5, min_size=12),
    )  # fmt: skip
    path = tmp_path / "model.onnx"
    _identity_model(path)
    write_metadata(path, deepness_metadata(plan, classes=3, resolution_cm=50.0))
    meta = deepness_view(path)
    assert meta["model_type"] == "Segmentor"
    assert meta["class_names"] == {"0": "background", "1": "Building", "2": "Water"}
    assert [meta["class_names"][k] for k in sorted(meta["class_names"], key=int)] == plan.data.classes
    assert meta["tiles_size"] == meta["tile_size"] == 384 and meta["tiles_overlap"] == 25
    assert meta["resolution"] == 50.0 and meta["seg_thresh"] == 0.5 and meta["seg_small_segment"] == 12
    # Deepness scales 8-bit pixels to [0, 1], then standardises: (raw/255 - m) / s == (raw - mean) / std.
    assert meta["standardization_mean"] == pytest.approx([0.4, 0.2, 0.1])
    assert meta["standardization_std"] == pytest.approx([0.2, 0.1, 0.05])
    assert meta["producer_note"] == "kept"
    assert read_metadata(path)["class_names"] == meta["class_names"]
    # Writing again replaces the keys instead of repeating them.
    write_metadata(path, deepness_metadata(plan, classes=3))
    keys = [p.key for p in onnx.load(str(path)).metadata_props]
    assert len(keys) == len(set(keys)) and "resolution" in keys  # an earlier key not re-sent is kept


def test_per_image_zscore_run_says_so_and_has_no_standardisation(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    _identity_model(path)
    write_metadata(path, deepness_metadata(Plan(), classes=2))
    meta = deepness_view(path)
    assert meta["class_names"] == {"0": "background", "1": "foreground"}
    assert meta["unetkit_normalization"] == "zscore" and "standardization_mean" not in meta
    assert "resolution" not in meta


@pytest.mark.slow
def test_unetkit_export_writes_the_metadata(tmp_path: Path) -> None:
    import sys

    pytest.importorskip("onnxscript")
    sys.path.insert(0, str(Path(__file__).parent / "infer"))
    from _run_factory import make_run

    from unetkit.cli import main

    run = make_run(tmp_path / "run", classes=3, tile=64, overlap=0.25)
    out = tmp_path / "model.onnx"
    assert main(["export", str(run), "--out", str(out), "--resolution-cm", "30"]) == 0
    meta = deepness_view(out)
    assert meta["class_names"] == {"0": "class_0", "1": "class_1", "2": "class_2"}
    assert meta["tiles_size"] == 64 and meta["tiles_overlap"] == 25 and meta["resolution"] == 30.0
    report = json.loads(out.with_name(out.name + ".json").read_text())
    assert report["file_size_bytes"] == out.stat().st_size
