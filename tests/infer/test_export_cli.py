"""``unetkit export``: ONNX graph of the per-tile pipeline, parity with PyTorch in ONNX Runtime, report, backend.

Exporting takes 15-30 s on a busy 2-core machine, so the module is marked slow and exports once.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _run_factory import make_run
from PIL import Image

from unetkit.cli import main
from unetkit.data.io import read_image
from unetkit.infer.predictor import Predictor
from unetkit.models.base import load_model

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
ISBI_PNG = DATA / "isbi2012_em_membrane" / "images" / "3.png"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("export")
    run = make_run(root / "run", tile=96, overlap=0.25)
    out = root / "onnx" / "model.onnx"
    out.parent.mkdir()
    assert main(["export", str(run), "--format", "onnx", "--out", str(out)]) == 0
    return run, out


def isbi_crop() -> np.ndarray:
    if not ISBI_PNG.exists():
        pytest.skip(f"dataset file {ISBI_PNG} is not available")
    return np.asarray(Image.open(ISBI_PNG))[None, 40:140, 200:330]  # (1, 100, 130)


def test_export_writes_the_graph_and_a_report_that_describes_it(exported: tuple[Path, Path]) -> None:
    run, out = exported
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.onnx", "model.onnx.json"]  # no temp files
    report = json.loads((out.parent / "model.onnx.json").read_text())
    assert report["input"]["name"] == "image" and report["input"]["shape"] == ["batch", 1, "height", "width"]
    assert report["output"]["name"] == "probabilities" and report["output"]["shape"][:2] == ["batch", 2]
    assert report["preprocessing"]["normalization"] == "zscore"
    assert report["shift"]["pixels"] == []  # no alignment shift in this run
    diffs = report["parity"]["max_abs_diff"]
    assert sorted(diffs) == ["1x1x96x96", "2x1x145x145"]  # the tile, and an odd size at batch 2
    assert all(0 <= d < 1e-4 for d in diffs.values())
    digest = hashlib.sha256((run / "best" / "model.safetensors").read_bytes()).hexdigest()
    assert report["weights_sha256"] == digest
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == ["probabilities"]


def test_onnx_runtime_matches_pytorch_on_a_real_normalised_image(exported: tuple[Path, Path]) -> None:
    run, out = exported
    image = isbi_crop().astype(np.float64)
    x = ((image - image.mean()) / image.std()).astype(np.float32)[None]  # whole-image z-score, as documented
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (got,) = session.run(["probabilities"], {"image": x})
    model = load_model(run / "best").eval()
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(x)), dim=1).numpy()
    assert got.shape == (1, 2, 100, 130)
    assert np.abs(got - expected).max() < 1e-4


def test_predictor_onnx_backend_matches_torch(exported: tuple[Path, Path], tmp_path: Path) -> None:
    run, out = exported
    image = isbi_crop()
    a = Predictor.from_run(run, fast=False)(image)
    b = Predictor.from_run(run, backend="onnx", onnx_path=out)(image)
    assert np.abs(a.probabilities - b.probabilities).max() < 1e-4
    # And through the CLI, which also checks that the graph came from this run's weights.
    source = tmp_path / "em.png"
    Image.fromarray(image[0]).save(source)
    assert main(["predict", str(run), str(source), "--out", str(tmp_path / "out"), "--onnx", str(out),
                 "--no-overlay"]) == 0
    np.testing.assert_array_equal(read_image(tmp_path / "out" / "em.png").array[0], b.labels)


def test_predict_refuses_a_graph_exported_from_other_weights(
    exported: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    _, out = exported
    other = make_run(tmp_path / "other", tile=96, seed=5)
    source = tmp_path / "em.png"
    Image.fromarray(isbi_crop()[0]).save(source)
    assert main(["predict", str(other), str(source), "--out", str(tmp_path / "out"), "--onnx", str(out)]) == 1
    assert "exported from other weights" in capsys.readouterr().err


def test_a_failed_parity_check_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = make_run(tmp_path / "run", tile=64)
    out = tmp_path / "onnx" / "model.onnx"
    out.parent.mkdir()
    assert main(["export", str(run), "--out", str(out), "--atol", "1e-12"]) == 1
    assert "differs from eager" in capsys.readouterr().err
    assert list(out.parent.iterdir()) == []


def test_the_report_carries_dataset_statistics_and_the_alignment_shift(tmp_path: Path) -> None:
    from unetkit.config import Plan
    from unetkit.export import preprocessing_spec

    run = make_run(tmp_path / "run", in_channels=3, tile=64, normalization="dataset",
                   intensity_mean=[107.8, 107.9, 108.4], intensity_std=[79.4, 78.1, 80.9], shift=[-0.5, 0.25])
    plan = Plan.load(run / "plan.yaml")
    pre = preprocessing_spec(plan.data)
    assert pre["normalization"] == "dataset" and pre["mean"] == [107.8, 107.9, 108.4] and pre["std"][2] == 80.9
    out = tmp_path / "m.onnx"
    assert main(["export", str(run), "--format", "onnx", "--out", str(out)]) == 0
    report = json.loads((tmp_path / "m.onnx.json").read_text())
    assert report["shift"]["pixels"] == [-0.5, 0.25] and report["preprocessing"]["std"] == [79.4, 78.1, 80.9]
