"""Window-by-window raster prediction: global statistics, equality with the in-memory predictor, atomicity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _run_factory import make_run
from PIL import Image

from unetkit.cli import main
from unetkit.data.normalize import normalize
from unetkit.infer import raster
from unetkit.infer.predictor import Predictor

rasterio = pytest.importorskip("rasterio")

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
DUBAI_JPG = DATA / "dubai_aerial_landcover" / "images" / "tile_1" / "image_part_002.jpg"
TRANSFORM = (0.5, 0.0, 500000.0, 0.0, -0.5, 2790000.0)


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"dataset file {path} is not available")
    return path


def write_geotiff(path: Path, rows: slice, cols: slice) -> tuple[Path, np.ndarray]:
    array = np.moveaxis(np.asarray(Image.open(need(DUBAI_JPG)).convert("RGB")), -1, 0)[:, rows, cols].copy()
    _, height, width = array.shape
    with rasterio.open(path, "w", driver="GTiff", height=height, width=width, count=3, dtype="uint8",
                       crs="EPSG:32640", transform=rasterio.Affine(*TRANSFORM), tiled=True, blockxsize=128,
                       blockysize=128) as ds:
        ds.write(array)
    return path, array


@pytest.fixture(scope="module")
def geotiff(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A 3 x 333 x 421 GeoTIFF cut from a real Dubai JPEG (sizes that no window or tile divides)."""
    return write_geotiff(tmp_path_factory.mktemp("raster") / "dubai.tif", slice(20, 353), slice(30, 451))


@pytest.fixture(scope="module")
def small_geotiff(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A 3 x 150 x 190 GeoTIFF (for the slower TTA and CLI round trips)."""
    return write_geotiff(tmp_path_factory.mktemp("small") / "dubai.tif", slice(300, 450), slice(200, 390))


@pytest.fixture(scope="module")
def run_rgb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("run"), in_channels=3, classes=3, tile=96, overlap=0.25)


def test_streaming_statistics_equal_whole_image_statistics(geotiff: tuple[Path, np.ndarray]) -> None:
    path, array = geotiff
    x = array.reshape(3, -1).astype(np.float64)
    z = raster.raster_stats(path, mode="zscore", block=100)  # 4 x 5 blocks, ragged at the ends
    np.testing.assert_allclose(z.shift, x.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(z.scale, x.std(axis=1), rtol=1e-10)
    m = raster.raster_stats(path, mode="minmax", block=100)
    np.testing.assert_array_equal(m.shift, x.min(axis=1))
    np.testing.assert_array_equal(m.scale, x.max(axis=1) - x.min(axis=1))
    n = raster.raster_stats(path, mode="none")
    np.testing.assert_array_equal(n.shift, 0)
    np.testing.assert_array_equal(n.scale, 1)
    # Applied to a window, the global statistics reproduce normalize() of the whole image there.
    window = array[:, 50:150, 200:300]
    np.testing.assert_allclose(z.apply(window), normalize(array)[:, 50:150, 200:300], atol=1e-5)


def test_windowed_prediction_equals_the_in_memory_predictor(
    geotiff: tuple[Path, np.ndarray], run_rgb: Path, tmp_path: Path
) -> None:
    path, array = geotiff
    predictor = Predictor.from_run(run_rgb)
    result = raster.predict_raster(predictor, path, mask_path=tmp_path / "mask.tif", prob_path=tmp_path / "p.tif",
                                   window=250)  # several chunks: tiles straddle chunk borders
    assert result.windows.chunks > 1 and result.windows.max_window[0] <= 250 + 96
    expected = predictor(array)
    with rasterio.open(path) as src, rasterio.open(tmp_path / "mask.tif") as mask, \
            rasterio.open(tmp_path / "p.tif") as prob:
        assert mask.crs == src.crs and mask.transform == src.transform
        assert prob.crs == src.crs and prob.transform == src.transform
        labels, probs = mask.read(1), prob.read()
    assert np.abs(probs - expected.probabilities).max() < 1e-4
    top2 = np.sort(expected.probabilities, axis=0)[-2:]
    decided = (top2[1] - top2[0]) > 1e-4  # pixels that are not a near tie
    np.testing.assert_array_equal(labels[decided], expected.labels[decided])
    assert len(np.unique(labels)) > 1


def test_dataset_normalisation_needs_no_pass_and_windows_equal_the_in_memory_predictor(
    small_geotiff: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    path, array = small_geotiff
    mean, std = [100.0, 110.0, 120.0], [50.0, 60.0, 0.0]
    stats = raster.raster_stats(path, mode="dataset", mean=mean, std=std)
    np.testing.assert_array_equal(stats.shift, mean)
    np.testing.assert_allclose(stats.scale, [50.0, 60.0, 1e-6], rtol=1e-6)  # std clamped like normalize()
    with pytest.raises(ValueError, match="one value per channel"):
        raster.raster_stats(path, mode="dataset", mean=[1.0], std=[1.0])
    run = make_run(tmp_path / "run", in_channels=3, classes=3, tile=96, overlap=0.25, normalization="dataset",
                   intensity_mean=mean, intensity_std=[50.0, 60.0, 70.0])
    predictor = Predictor.from_run(run)
    raster.predict_raster(predictor, path, mask_path=tmp_path / "m.tif", prob_path=tmp_path / "p.tif", window=170)
    with rasterio.open(tmp_path / "p.tif") as prob:
        probs = prob.read()
    assert np.abs(probs - predictor(array).probabilities).max() < 1e-4


def test_windowed_uncertainty_with_tta(
    small_geotiff: tuple[Path, np.ndarray], run_rgb: Path, tmp_path: Path
) -> None:
    path, array = small_geotiff
    predictor = Predictor.from_run(run_rgb, tta="flips")
    raster.predict_raster(predictor, path, mask_path=tmp_path / "m.tif", uncertainty_path=tmp_path / "u.tif",
                          window=170)
    with rasterio.open(tmp_path / "u.tif") as ds:
        uncertainty = ds.read(1)
    expected = predictor(array).uncertainty
    np.testing.assert_allclose(uncertainty, expected, atol=1e-5)
    with pytest.raises(ValueError, match="test-time augmentation"):
        raster.predict_raster(Predictor.from_run(run_rgb), path, mask_path=tmp_path / "x.tif",
                              uncertainty_path=tmp_path / "y.tif")


def test_an_error_midway_leaves_no_output_and_keeps_the_old_one(
    geotiff: tuple[Path, np.ndarray], run_rgb: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = geotiff
    (tmp_path / "mask.tif").write_bytes(b"old")
    calls = []
    real_read = raster._read_window

    def flaky(source: Path, box: tuple[int, int, int, int]) -> np.ndarray:
        calls.append(box)
        if len(calls) == 3:
            raise OSError("read error in the third window")
        return real_read(source, box)

    monkeypatch.setattr(raster, "_read_window", flaky)
    with pytest.raises(OSError, match="third window"):
        raster.predict_raster(Predictor.from_run(run_rgb), path, mask_path=tmp_path / "mask.tif",
                              prob_path=tmp_path / "prob.tif", window=250)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.tif"]
    assert (tmp_path / "mask.tif").read_bytes() == b"old"


def test_cli_routes_large_tiffs_to_the_windowed_path(
    small_geotiff: tuple[Path, np.ndarray], run_rgb: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, array = small_geotiff
    assert raster.is_large_raster(path, threshold_pixels=150 * 190 - 1)
    assert not raster.is_large_raster(path, threshold_pixels=150 * 190)
    assert not raster.is_large_raster(DUBAI_JPG, threshold_pixels=0)  # only TIFFs are read by window
    used = []
    real = raster.predict_raster
    monkeypatch.setattr(raster, "predict_raster", lambda *a, **k: used.append(a[1]) or real(*a, **k))
    out = tmp_path / "out"
    assert main(["predict", str(run_rgb), str(path), "--out", str(out), "--window-threshold", "20000"]) == 0
    assert used == [path]
    assert sorted(p.name for p in out.iterdir()) == ["dubai.tif"]  # no overlay for windowed rasters
    with rasterio.open(out / "dubai.tif") as ds:
        assert ds.transform == rasterio.Affine(*TRANSFORM) and ds.crs.to_epsg() == 32640
        labels = ds.read(1)
    expected = Predictor.from_run(run_rgb)(array)
    assert (labels != expected.labels).mean() < 1e-3
