"""Ensembles average the models' class probabilities (after each one's TTA); the CLI takes CV folders and --ensemble."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from _run_factory import make_run
from PIL import Image

from unetkit.cli import main
from unetkit.data.io import read_image
from unetkit.infer.ensemble import EnsemblePredictor, resolve_runs
from unetkit.infer.predictor import Predictor
from unetkit.runtime.postprocess import probabilities_to_labels

TILE = 48


def _image(seed: int = 0, shape: tuple[int, int] = (70, 90)) -> np.ndarray:
    """Smooth-ish structured noise (1, H, W) in 0..255, so that predictions vary over the image."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[: shape[0], : shape[1]]
    base = 120 + 60 * np.sin(x / 7.0) * np.cos(y / 5.0)
    return (base + rng.normal(0, 20, shape)).clip(0, 255).astype(np.float32)[None]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ensemble")
    return {
        "a": make_run(root / "a", tile=TILE, seed=0),
        "a_copy": make_run(root / "a_copy", tile=TILE, seed=0),
        "b": make_run(root / "b", tile=TILE, seed=1),
    }


def test_ensemble_of_two_identical_models_is_the_single_model(runs: dict[str, Path]) -> None:
    image = _image()
    single = Predictor.from_run(runs["a"])(image)
    ensemble = EnsemblePredictor.from_runs([runs["a"], runs["a_copy"]])(image)
    np.testing.assert_allclose(ensemble.probabilities, single.probabilities, atol=1e-6)
    np.testing.assert_array_equal(ensemble.labels, single.labels)
    assert ensemble.uncertainty is None


@pytest.mark.parametrize("tta", ["none", "flips"])
def test_ensemble_is_the_mean_of_the_models_probabilities(runs: dict[str, Path], tta: str) -> None:
    image = _image(seed=1)
    a = Predictor.from_run(runs["a"], tta=tta)(image)
    b = Predictor.from_run(runs["b"], tta=tta)(image)
    assert np.abs(a.probabilities - b.probabilities).max() > 0.05  # two different models
    ensemble = EnsemblePredictor.from_runs([runs["a"], runs["b"]], tta=tta)(image)
    mean = (a.probabilities + b.probabilities) / 2
    np.testing.assert_allclose(ensemble.probabilities, mean, atol=1e-5)
    np.testing.assert_array_equal(ensemble.labels, probabilities_to_labels(mean, threshold=0.5))
    assert (ensemble.labels != a.labels).any() or (ensemble.labels != b.labels).any()
    if tta == "none":
        assert ensemble.uncertainty is None
    else:
        assert a.uncertainty is not None and b.uncertainty is not None
        np.testing.assert_allclose(ensemble.uncertainty, (a.uncertainty + b.uncertainty) / 2, atol=1e-6)


def test_models_with_other_classes_or_data_options_are_refused(runs: dict[str, Path], tmp_path: Path) -> None:
    three = make_run(tmp_path / "three", classes=3, tile=TILE)
    with pytest.raises(ValueError, match="model classes is 3, not 2"):
        EnsemblePredictor.from_runs([runs["a"], three])
    minmax = make_run(tmp_path / "minmax", normalization="minmax", tile=TILE)
    with pytest.raises(ValueError, match="data option normalization is 'minmax', not 'zscore'"):
        EnsemblePredictor.from_runs([runs["a"], minmax])
    with pytest.raises(ValueError, match="at least two"):
        EnsemblePredictor([Predictor.from_run(runs["a"])])


def test_a_cv_folder_expands_to_its_folds_in_fold_order(tmp_path: Path, runs: dict[str, Path]) -> None:
    cv = tmp_path / "cv"
    for fold in (10, 2, 0):
        make_run(cv / f"fold_{fold}", tile=TILE)
    (cv / "fold_x").mkdir()  # not a run: ignored
    assert resolve_runs(cv) == [cv / "fold_0", cv / "fold_2", cv / "fold_10"]
    assert resolve_runs(runs["a"], [cv]) == [runs["a"], cv / "fold_0", cv / "fold_2", cv / "fold_10"]
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        resolve_runs(tmp_path / "nothing")


def _write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def test_predict_cli_with_a_cv_folder_and_with_ensemble_flags(runs: dict[str, Path], tmp_path: Path) -> None:
    image = _image(seed=2)
    source = _write_png(tmp_path / "in" / "x.png", image[0].astype(np.uint8))
    cv = tmp_path / "cv"
    make_run(cv / "fold_0", tile=TILE, seed=0)
    make_run(cv / "fold_1", tile=TILE, seed=1)
    raw = read_image(source).array.astype(np.float32)
    expected = EnsemblePredictor.from_runs([runs["a"], runs["b"]])(raw)

    for args, out in (
        ([str(cv)], tmp_path / "out_cv"),
        ([str(runs["a"]), "--ensemble", str(runs["b"])], tmp_path / "out"),
    ):
        assert main(["predict", args[0], str(source), "--out", str(out), "--prob", *args[1:]]) == 0
        np.testing.assert_array_equal(read_image(out / "x.png").array[0], expected.labels)
        np.testing.assert_allclose(read_image(out / "x_prob.tif").array, expected.probabilities, atol=1e-6)


def test_predict_cli_refuses_onnx_with_an_ensemble(runs: dict[str, Path], tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    source = _write_png(tmp_path / "x.png", _image()[0].astype(np.uint8))
    argv = ["predict", str(runs["a"]), str(source), "--out", str(tmp_path / "o"), "--ensemble", str(runs["b"]),
            "--onnx", str(tmp_path / "m.onnx")]  # fmt: skip
    assert main(argv) != 0
    assert "cannot be combined with an ensemble" in capsys.readouterr().err


def test_evaluate_cli_scores_the_ensemble(runs: dict[str, Path], tmp_path: Path) -> None:
    data = tmp_path / "data"
    truths = {}
    for i in range(2):
        image = _image(seed=10 + i)[0].astype(np.uint8)
        truth = (image > np.median(image)).astype(np.uint8)
        _write_png(data / "images" / f"s{i}.png", image)
        _write_png(data / "masks" / f"s{i}.png", truth)
        truths[f"s{i}"] = (image, truth)
    assert main(["evaluate", str(runs["a"]), str(data), "--ensemble", str(runs["b"]), "--worst", "0"]) == 0
    out = runs["a"] / "eval_ensemble"
    ensemble = EnsemblePredictor.from_runs([runs["a"], runs["b"]])
    with (out / "per_image.csv").open() as f:
        rows = {r["key"]: float(r["dice"]) for r in csv.DictReader(f)}
    assert sorted(rows) == ["s0", "s1"]
    for key, (image, truth) in truths.items():
        pred = ensemble(image[None].astype(np.float32)).labels == 1
        fg = truth == 1
        assert rows[key] == pytest.approx(2 * (pred & fg).sum() / (pred.sum() + fg.sum()), abs=1e-6)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dice"] == pytest.approx(np.mean(list(rows.values())))


def test_windowed_raster_prediction_of_an_ensemble_equals_in_memory(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    rasterio = pytest.importorskip("rasterio")
    from unetkit.infer.raster import predict_raster

    array = _image(seed=3, shape=(110, 130)).astype(np.uint8)
    path = tmp_path / "x.tif"
    geo = {"crs": "EPSG:32640", "transform": rasterio.Affine(0.5, 0.0, 500000.0, 0.0, -0.5, 2790000.0)}
    with rasterio.open(path, "w", driver="GTiff", height=110, width=130, count=1, dtype="uint8", **geo) as ds:
        ds.write(array)
    ensemble = EnsemblePredictor.from_runs([runs["a"], runs["b"]])
    result = predict_raster(
        ensemble, path, mask_path=tmp_path / "m.tif", prob_path=tmp_path / "p.tif", window=60
    )
    assert result.windows.chunks > 1
    expected = ensemble(array.astype(np.float32))
    with rasterio.open(tmp_path / "p.tif") as prob:
        np.testing.assert_allclose(prob.read(), expected.probabilities, atol=1e-4)
