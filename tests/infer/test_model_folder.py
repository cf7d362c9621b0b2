"""A checkpoint folder carries its run's plan: a copied ``RUN/best`` predicts, exports and evaluates on its own,
exactly as the run does (normalisation, classes, tiling, TTA and the alignment shift come with it)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from unetkit.cli import main
from unetkit.config import Plan
from unetkit.export import file_sha256
from unetkit.infer.predictor import Predictor

SLICES = range(6)
TRAIN = [
    "--encoder", "plain", "--value-map", "0:1,255:0", "--precision", "fp32",
    "--set", "model.kwargs.width=4", "--set", "model.kwargs.depth=2",
    "--set", "train.patch_size=[64,64]", "--set", "train.batch_size=2", "--set", "train.time_budget_s=null",
    "--set", "train.steps=6", "--set", "train.val_every=3", "--set", "infer.tile_size=[128,128]",
    "--set", "infer.tta=flips",
]  # fmt: skip
FIXTURE_RUN = Path(__file__).resolve().parents[1] / "fixtures" / "run_v1"


@pytest.fixture(scope="module")
def run(isbi_csv, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("model_folder")
    assert main(["train", str(isbi_csv(folder, SLICES)), "--out", str(folder / "run"), *TRAIN]) == 0
    return folder / "run"


def test_every_checkpoint_carries_the_final_plan(run: Path) -> None:
    final = Plan.load(run / "plan.yaml").to_dict()  # after the alignment step rewrote infer.shift
    for name in ("best", "last"):
        carried = json.loads((run / name / "config.json").read_text())["plan"]
        assert Plan.from_dict(carried).to_dict() == final


def test_a_copied_best_folder_predicts_what_the_run_predicts(run: Path, datasets: Path, tmp_path: Path) -> None:
    model = tmp_path / "shipped_model"
    shutil.copytree(run / "best", model)
    assert sorted(p.name for p in model.iterdir()) == ["config.json", "model.safetensors"]
    image = str(datasets / "isbi2012_em_membrane" / "test_images_unlabeled" / "0.png")
    assert main(["predict", str(run), image, "--out", str(tmp_path / "from_run"), "--prob"]) == 0
    assert main(["predict", str(model), image, "--out", str(tmp_path / "from_model"), "--prob"]) == 0
    written = sorted(p.name for p in (tmp_path / "from_run").iterdir())
    assert written and written == sorted(p.name for p in (tmp_path / "from_model").iterdir())
    for name in written:
        assert (tmp_path / "from_run" / name).read_bytes() == (tmp_path / "from_model" / name).read_bytes(), name
    ours = Predictor.from_run(model)
    assert ours.plan.to_dict() == Plan.load(run / "plan.yaml").to_dict() and ours.infer.tta == "flips"
    # Export works from the folder too, and the graph is recognised as that folder's weights.
    pytest.importorskip("onnxruntime")
    assert main(["export", str(model), "--out", str(tmp_path / "m.onnx")]) == 0
    report = json.loads((tmp_path / "m.onnx.json").read_text())
    assert report["weights_sha256"] == file_sha256(model / "model.safetensors")
    onnx_out = tmp_path / "from_onnx"
    assert main(["predict", str(model), image, "--out", str(onnx_out), "--onnx", str(tmp_path / "m.onnx")]) == 0
    mask = next(n for n in written if n.endswith(".png") and "overlay" not in n and "prob" not in n)
    from PIL import Image

    torch_mask, onnx_mask = (np.asarray(Image.open(d / mask)) for d in (tmp_path / "from_run", onnx_out))
    assert (torch_mask == onnx_mask).mean() > 0.999


def test_an_old_checkpoint_folder_without_a_plan_says_what_to_do(
    datasets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = tmp_path / "old_best"
    shutil.copytree(FIXTURE_RUN / "best", old)  # checkpoint format 1, written before checkpoints carried plans
    image = str(datasets / "isbi2012_em_membrane" / "images" / "0.png")
    assert main(["predict", str(old), image, "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{old / 'config.json'}: this model folder carries no plan" in err and "its run folder" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    # The run folder itself still predicts (its plan.yaml).
    assert np.isfinite(Predictor.from_run(FIXTURE_RUN)(np.zeros((1, 32, 32), np.float32)).probabilities).all()
