"""``unetkit predict`` end to end on real files: formats and geometry kept, TTA outputs, bad files, atomicity."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from _run_factory import make_run
from PIL import Image

from unetkit.cli import main
from unetkit.data.io import read_image
from unetkit.infer.predictor import Predictor

rasterio = pytest.importorskip("rasterio")

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
ISBI = DATA / "isbi2012_em_membrane" / "images"
DUBAI_JPG = DATA / "dubai_aerial_landcover" / "images" / "tile_1" / "image_part_001.jpg"
HIPPO = DATA / "msd_task04_hippocampus" / "images" / "hippocampus_001.nii.gz"
UTM40N = "EPSG:32640"
TRANSFORM = (0.31, 0.02, 512345.5, -0.01, -0.29, 2789012.25)  # rotated/sheared: not a default


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"dataset file {path} is not available")
    return path


def isbi_crop(folder: Path, name: str, *, index: int = 0, size: int = 160) -> Path:
    """A real ISBI image cropped small (keeps the CLI tests fast), saved as PNG."""
    array = np.asarray(Image.open(need(ISBI / f"{index}.png")))[:size, :size]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    Image.fromarray(array).save(path)
    return path


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or ".tmp" in p.name)


@pytest.fixture(scope="module")
def run_2d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("run2d"), tile=96, overlap=0.25)


def test_png_with_d4_tta_writes_mask_probabilities_uncertainty_and_overlay(run_2d: Path, tmp_path: Path) -> None:
    image_path = isbi_crop(tmp_path / "in", "em.png")
    out = tmp_path / "out"
    code = main(["predict", str(run_2d), str(image_path), "--out", str(out), "--tta", "d4", "--uncertainty", "--prob"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["em.png", "em_overlay.png", "em_prob.tif", "em_uncertainty.tif"]
    expected = Predictor.from_run(run_2d, tta="d4")(read_image(image_path).array)
    mask = read_image(out / "em.png").array
    assert mask.shape == (1, 160, 160) and mask.dtype == np.uint8
    np.testing.assert_array_equal(mask[0], expected.labels)
    uncertainty = read_image(out / "em_uncertainty.tif").array
    assert uncertainty.shape == (1, 160, 160) and uncertainty.dtype == np.float32
    np.testing.assert_allclose(uncertainty[0], expected.uncertainty, atol=1e-6)
    assert uncertainty.max() > 0
    prob = read_image(out / "em_prob.tif").array
    np.testing.assert_allclose(prob.sum(axis=0), 1.0, atol=1e-5)
    assert read_image(out / "em_overlay.png").array.shape == (3, 160, 160)


def test_uncertainty_without_tta_is_a_usage_error(run_2d: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    image_path = isbi_crop(tmp_path / "in", "em.png", size=64)
    assert main(["predict", str(run_2d), str(image_path), "--out", str(tmp_path / "out"), "--uncertainty"]) == 1
    assert "--uncertainty needs test-time augmentation" in capsys.readouterr().err


def make_geotiff(path: Path, *, nodata: float | None = 0) -> np.ndarray:
    """A real Dubai RGB crop as a GeoTIFF in UTM 40N with a non-trivial transform; returns the pixels."""
    array = np.moveaxis(np.asarray(Image.open(need(DUBAI_JPG)).convert("RGB")), -1, 0)[:, 100:290, 50:300].copy()
    profile = {"driver": "GTiff", "height": array.shape[1], "width": array.shape[2], "count": 3, "dtype": "uint8",
               "crs": UTM40N, "transform": rasterio.Affine(*TRANSFORM), "nodata": nodata}
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(array)
    return array


def test_geotiff_in_geotiff_out_with_identical_crs_and_transform(tmp_path: Path) -> None:
    source = tmp_path / "in" / "dubai.tif"
    source.parent.mkdir()
    pixels = make_geotiff(source)
    run = make_run(tmp_path / "run", in_channels=3, classes=3, tile=96, overlap=0.25)
    out = tmp_path / "out"
    assert main(["predict", str(run), str(source), "--out", str(out), "--prob", "--no-overlay"]) == 0
    with rasterio.open(source) as src, rasterio.open(out / "dubai.tif") as mask, \
            rasterio.open(out / "dubai_prob.tif") as prob:
        for ds in (mask, prob):
            assert ds.crs == src.crs and ds.crs.to_epsg() == 32640
            assert ds.transform == src.transform and tuple(ds.transform)[:6] == TRANSFORM
            assert (ds.height, ds.width) == (190, 250)
        assert mask.count == 1 and mask.dtypes[0] == "uint8"
        assert mask.nodata is None  # the image's nodata=0 would turn class 0 into "missing"
        assert prob.count == 3 and prob.dtypes[0] == "float32"
        labels, probs = mask.read(1), prob.read()
    expected = Predictor.from_run(run)(pixels)
    np.testing.assert_array_equal(labels, expected.labels)
    np.testing.assert_allclose(probs, expected.probabilities, atol=1e-6)
    assert len(np.unique(labels)) > 1


def test_nifti_in_nifti_out_with_identical_affine(tmp_path: Path) -> None:
    real = nib.load(need(HIPPO))
    # The real volume, re-saved with an oblique affine so that "identical" means something.
    affine = np.array([[0.0, -1.2, 0.1, 30.5], [0.9, 0.0, 0.0, -12.25], [0.0, 0.05, 1.5, 4.0], [0, 0, 0, 1]])
    source = tmp_path / "in" / "hippo.nii.gz"
    source.parent.mkdir()
    nib.save(nib.Nifti1Image(np.asarray(real.dataobj), affine), source)
    run = make_run(tmp_path / "run", spatial_dims=3, classes=3, tile=[32, 32, 32], overlap=0.25)
    out = tmp_path / "out"
    assert main(["predict", str(run), str(HIPPO), str(source), "--out", str(out), "--prob"]) == 0
    for name, src in (("hippocampus_001", real), ("hippo", nib.load(source))):
        mask = nib.load(out / f"{name}.nii.gz")
        assert mask.shape == real.shape and mask.get_data_dtype() == np.uint8
        np.testing.assert_array_equal(mask.affine, src.affine)
        prob = nib.load(out / f"{name}_prob.nii.gz")
        assert prob.shape == (*real.shape, 3)
        np.testing.assert_array_equal(prob.affine, src.affine)
    assert not (out / "hippo_overlay.png").exists()  # no overlay for volumes
    expected = Predictor.from_run(run)(read_image(source).array)
    np.testing.assert_array_equal(np.asarray(nib.load(out / "hippo.nii.gz").dataobj), expected.labels)


def test_bad_files_are_reported_by_name_and_the_good_ones_still_written(
    run_2d: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "in"
    good_a = isbi_crop(folder, "a.png", index=0, size=64)
    good_b = isbi_crop(folder, "b.png", index=1, size=64)
    truncated = folder / "broken.png"
    truncated.write_bytes(good_a.read_bytes()[:120])
    unsupported = folder / "notes.txt"
    unsupported.write_text("not an image")
    out = tmp_path / "out"
    code = main(["predict", str(run_2d), str(good_a), str(truncated), str(unsupported), str(good_b),
                 "--out", str(out), "--no-overlay"])
    err = capsys.readouterr().err
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]
    lines = err.strip().splitlines()
    assert len(lines) == 2
    assert "broken.png" in lines[0] and "unreadable image" in lines[0]
    assert "notes.txt" in lines[1] and "unsupported image type '.txt'" in lines[1]


def test_outputs_replace_old_ones_atomically_and_leave_no_temp_files(run_2d: Path, tmp_path: Path) -> None:
    image_path = isbi_crop(tmp_path / "in", "em.png", size=64)
    out = tmp_path / "out"
    out.mkdir()
    (out / "em.png").write_bytes(b"old result")
    assert main(["predict", str(run_2d), str(image_path), "--out", str(out), "--no-overlay"]) == 0
    assert read_image(out / "em.png").array.shape == (1, 64, 64)
    assert leftovers(out) == []


def test_a_failed_write_keeps_the_old_output_and_leaves_no_temp_files(
    run_2d: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    image_path = isbi_crop(tmp_path / "in", "em.png", size=64)
    out = tmp_path / "out"
    out.mkdir()
    (out / "em.png").write_bytes(b"old result")

    def failing_save(self: Image.Image, fp: object, *args: object, **kwargs: object) -> None:
        Path(str(fp)).write_bytes(b"\x89PNG half written")
        raise OSError("No space left on device")

    monkeypatch.setattr(Image.Image, "save", failing_save)
    assert main(["predict", str(run_2d), str(image_path), "--out", str(out), "--no-overlay"]) == 1
    assert "No space left on device" in capsys.readouterr().err
    assert (out / "em.png").read_bytes() == b"old result"
    assert leftovers(out) == []


def test_an_output_never_overwrites_an_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    source = folder / "dubai.tif"
    make_geotiff(source)
    before = source.read_bytes()
    run = make_run(tmp_path / "run", in_channels=3, tile=96)
    assert main(["predict", str(run), str(source), "--out", str(folder), "--no-overlay"]) == 1
    assert "would overwrite an input" in capsys.readouterr().err
    assert source.read_bytes() == before
