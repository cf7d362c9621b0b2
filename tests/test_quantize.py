"""int8 export on a small real run: ISBI 2012 (8 slices, membranes as foreground), a tiny U-Net trained 40 steps.

The run is trained once per module (~10 s) and exported with ``--int8`` once (fp32 graph, quantisation and the
validation comparison: ~20 s on a 2-core machine).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

import unetkit.quantize as quantize
from unetkit.cli import main
from unetkit.config import Plan
from unetkit.data.io import read_image
from unetkit.infer.predictor import Predictor, onnx_labeller
from unetkit.train.evaluation import foreground_dice
from unetkit.train.overlays import overlay_name

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

SLICES = range(8)  # 8 images, val_fraction 0.2: round(1.6) = 2 validation images, 6 for training
TRAIN = [
    "--encoder", "plain", "--value-map", "0:1,255:0", "--precision", "fp32",
    "--set", "model.kwargs.width=8", "--set", "model.kwargs.depth=2",
    "--set", "train.patch_size=[128,128]", "--set", "train.batch_size=4", "--set", "train.time_budget_s=null",
    "--set", "train.steps=40", "--set", "train.warmup_steps=10", "--set", "train.align=false",
    "--set", "infer.tile_size=[128,128]", "--set", "infer.tta=none",
]  # fmt: skip


@pytest.fixture(scope="module")
def run(isbi_csv, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("int8")
    assert main(["train", str(isbi_csv(folder, SLICES)), "--out", str(folder / "run"), *TRAIN]) == 0
    return folder / "run"


@pytest.fixture(scope="module")
def exported(run: Path) -> Path:
    out = run.parent / "onnx" / "model.onnx"
    out.parent.mkdir()
    assert main(["export", str(run), "--out", str(out), "--int8", "--calibration-patches", "8"]) == 0
    return out.parent


def _cpu_flags() -> set[str]:
    line = next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags"))
    return set(line.partition(":")[2].split())


def test_int8_export_writes_both_graphs_and_a_report_with_plausible_numbers(run: Path, exported: Path) -> None:
    assert sorted(p.name for p in exported.iterdir()) == [
        "model.int8.onnx", "model.int8.onnx.json", "model.onnx", "model.onnx.json"]  # no temporary files
    fp32 = json.loads((exported / "model.onnx.json").read_text())
    report = json.loads((exported / "model.int8.onnx.json").read_text())
    assert report["model_file"] == "model.int8.onnx" and report["precision"] == "int8"
    assert report["weights_sha256"] == fp32["weights_sha256"]  # what `predict --onnx` checks
    assert report["input"] == fp32["input"] and report["output"] == fp32["output"]
    assert report["metric"] == "foreground_dice" and report["validation_images"] == 2
    # 40 steps learn membranes: predicting "all membrane" scores ~0.36; int8 stays within the 0.01 allowed
    assert 0.5 < report["dice_fp32"] <= 1 and 0.5 < report["dice_int8"] <= 1
    assert report["drop"] == pytest.approx(report["dice_fp32"] - report["dice_int8"]) and report["drop"] <= 0.01
    assert report["max_drop"] == 0.01 and report["quantization"]["calibration_patches"] == 8
    assert all(0 < report["images_per_s"][k] < 1e4 for k in ("fp32", "int8"))
    assert report["file_size_bytes"] == (exported / "model.int8.onnx").stat().st_size
    flags = _cpu_flags()
    for name in ("avx512_vnni", "avx512_bf16", "amx_int8", "avx_vnni", "avx2"):
        assert report["cpu"][name] is fp32["cpu"][name] is (name in flags), name


def test_fp32_score_is_the_validation_dice_of_the_split_training_used(run: Path, exported: Path) -> None:
    plan = Plan.load(run / "plan.yaml")
    train, val = quantize.training_split(plan)
    # Training wrote an overlay for each of its validation images: the same two images.
    assert sorted(overlay_name(e.key) + ".png" for e in val) == sorted(p.name for p in (run / "overlays").iterdir())
    assert len(train) == 6 and not {e.key for e in train} & {e.key for e in val}
    # Reference: the PyTorch predictor (eager fp32) and the Dice training validates with.
    predictor = Predictor.from_run(run, fast=False, precision="fp32")
    dice = [foreground_dice(predictor(e.image).labels, e.mask, num_classes=2) for e in val]
    report = json.loads((exported / "model.int8.onnx.json").read_text())
    assert report["dice_fp32"] == pytest.approx(float(np.mean(dice)), abs=1e-3)


def test_int8_graph_is_quantised_and_keeps_the_graph_contract(exported: Path) -> None:
    graph = onnx.load(str(exported / "model.int8.onnx")).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("QuantizeLinear") > 5 and "DequantizeLinear" in ops
    # The decoder's transposed convolutions (no int8 kernel in ONNX Runtime) became int8 1x1 convolutions plus
    # a pixel shuffle; every convolution reads quantised weights.
    fp32_ops = [n.op_type for n in onnx.load(str(exported / "model.onnx")).graph.node]
    assert fp32_ops.count("ConvTranspose") == 2 and "ConvTranspose" not in ops
    assert ops.count("Conv") == fp32_ops.count("Conv") + 2
    dequantized = {n.output[0]: n for n in graph.node if n.op_type == "DequantizeLinear"}
    assert all(n.input[1] in dequantized for n in graph.node if n.op_type == "Conv")
    assert any(t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4 for t in graph.initializer)  # weights
    producer = {o: n for n in graph.node for o in n.output}
    # The probabilities (the written-out softmax ends in Div) stay float, not 1/255 steps.
    assert producer["probabilities"].op_type == "Div" and producer[producer["probabilities"].input[0]].op_type == "Exp"
    assert [i.name for i in graph.input] == ["image"] and [o.name for o in graph.output] == ["probabilities"]
    # On a real normalised tile of an odd size, int8 probabilities follow fp32's closely.
    image = np.asarray(Image.open(Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
                                  / "isbi2012_em_membrane" / "images" / "20.png"), dtype=np.float64)[:150, :201]
    x = ((image - image.mean()) / image.std()).astype(np.float32)[None, None]
    fp32, int8 = (ort.InferenceSession(str(exported / name), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
                  for name in ("model.onnx", "model.int8.onnx"))  # fmt: skip
    assert int8.shape == fp32.shape == (1, 2, 150, 201)
    assert np.abs(int8 - fp32).mean() < 0.02
    assert (int8.argmax(1) == fp32.argmax(1)).mean() > 0.97


def test_predict_runs_the_int8_graph(run: Path, exported: Path, datasets: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    source = datasets / "isbi2012_em_membrane" / "images" / "20.png"
    for name, line in (("model.onnx", f"backend: ONNX Runtime, fp32 graph {exported / 'model.onnx'} (--onnx)"),
                       ("model.int8.onnx", f"backend: ONNX Runtime, int8 graph {exported / 'model.int8.onnx'} (--onnx)")):
        assert main(["predict", str(run), str(source), "--out", str(tmp_path / name), "--onnx", str(exported / name),
                     "--no-overlay"]) == 0  # fmt: skip
        assert line in capsys.readouterr().out
    fp32, int8 = (read_image(tmp_path / name / "20.png").array[0] for name in ("model.onnx", "model.int8.onnx"))
    assert int8.shape == (512, 512) and set(np.unique(int8)) == {0, 1}
    assert (int8 == fp32).mean() > 0.97


def test_a_bad_calibration_is_refused_and_leaves_nothing(run: Path, exported: Path, tmp_path: Path) -> None:
    # Ranges calibrated on inputs 1000x too large: real activations fall into a few quantisation steps.
    out = tmp_path / "bad.int8.onnx"
    with pytest.raises(quantize.QuantizationRefused, match=r"drops by .* more than the allowed 0.01") as refused:
        quantize.quantize_run(run, exported / "model.onnx", out, labeller=onnx_labeller, calibration_patches=4,
                              calibration_transform=lambda tile: tile * 1000)
    assert refused.value.result.drop > 0.1
    assert list(tmp_path.iterdir()) == []


def test_the_export_command_refuses_with_one_line_and_exit_1(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    zeros = functools.partial(quantize.quantize_run, calibration_transform=np.zeros_like)
    monkeypatch.setattr(quantize, "quantize_run", zeros)
    out = tmp_path / "model.onnx"
    assert main(["export", str(run), "--out", str(out), "--int8", "--calibration-patches", "4"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("unetkit export: int8 graph refused: validation Dice drops by ")
    assert "more than the allowed 0.01" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.onnx.json"]  # fp32 only


def test_bad_arguments_are_refused_before_any_work(run: Path, exported: Path, tmp_path: Path) -> None:
    fp32 = exported / "model.onnx"
    with pytest.raises(ValueError, match="calibration patches must be >= 1"):
        quantize.quantize_run(run, fp32, tmp_path / "a.onnx", labeller=onnx_labeller, calibration_patches=0)
    with pytest.raises(ValueError, match="must be >= 0"):
        quantize.quantize_run(run, fp32, tmp_path / "a.onnx", labeller=onnx_labeller, max_drop=-0.1)
    with pytest.raises(ValueError, match="would overwrite the fp32 graph"):
        quantize.quantize_run(run, fp32, fp32, labeller=onnx_labeller)
    with pytest.raises(FileNotFoundError, match="no such ONNX model"):
        quantize.quantize_run(run, tmp_path / "missing.onnx", tmp_path / "a.onnx", labeller=onnx_labeller)
    assert list(tmp_path.iterdir()) == []


def test_weights_use_seven_bits_only_without_int8_dot_products() -> None:
    from unetkit.quantize import has_int8_dot_product

    assert not has_int8_dot_product({"avx2": True, "avx512f": True, "avx512_vnni": False})
    assert has_int8_dot_product({"avx2": True, "avx512_vnni": True})
    assert has_int8_dot_product({"avx2": True, "avx_vnni": True})
    assert has_int8_dot_product({"amx_int8": True})
