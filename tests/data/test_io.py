"""Image I/O on the real datasets: every format, geometry round trips, windows, atomic writes, bad files."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest
import tifffile
from PIL import Image

from unetkit.data import geotiff
from unetkit.data.io import ImageData, image_shape, read_image, write_image

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
ISBI = DATA / "isbi2012_em_membrane"
DRIVE = DATA / "drive_retina_vessels"
DUBAI = DATA / "dubai_aerial_landcover"
HIPPO = DATA / "msd_task04_hippocampus"

rasterio = pytest.importorskip("rasterio")


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"dataset file {path} is not available")
    return path


# --- reading every real format ----------------------------------------------------------------


def test_isbi_png_is_grey_512_and_matches_opencv() -> None:
    path = need(ISBI / "images" / "0.png")
    image = read_image(path)
    assert isinstance(image, ImageData)
    assert image.array.shape == (1, 512, 512) and image.array.dtype == np.uint8
    assert image.meta["format"] == "png" and image.meta["mode"] == "L"
    # OpenCV's PNG decoder is independent of Pillow.
    np.testing.assert_array_equal(image.array[0], cv2.imread(str(path), cv2.IMREAD_UNCHANGED))


def test_drive_rgb_tiff_is_channels_first_and_matches_pillow() -> None:
    path = need(DRIVE / "training" / "images" / "21_training.tif")
    image = read_image(path)
    assert image.array.shape == (3, 584, 565) and image.array.dtype == np.uint8
    assert image.meta["format"] == "tiff"
    with Image.open(path) as im:  # Pillow decodes the LZW TIFF on its own
        expected = np.array(im.convert("RGB"))
    np.testing.assert_array_equal(np.moveaxis(image.array, 0, -1), expected)


def test_drive_gif_masks_grey_and_palette() -> None:
    manual = read_image(need(DRIVE / "training" / "1st_manual" / "21_manual1.gif"))
    assert manual.array.shape == (1, 584, 565)
    assert set(np.unique(manual.array)) == {0, 255}  # as documented in SOURCE.md
    second = read_image(need(DRIVE / "test" / "2nd_manual" / "01_manual2.gif"))
    assert second.meta["mode"] == "P"
    assert set(np.unique(second.array)) == {0, 1}  # palette indices, not colours
    assert len(second.meta["palette"][0]) == 3


def test_dubai_jpeg_and_palette_mask() -> None:
    image = read_image(need(DUBAI / "images" / "tile_2" / "image_part_001.jpg"))
    mask = read_image(need(DUBAI / "masks" / "tile_2" / "image_part_001.png"))
    assert image.array.shape[0] == 3 and image.meta["format"] == "jpeg"
    assert mask.array.shape == (1, *image.array.shape[1:])
    assert mask.meta["mode"] == "P"
    # Indices looked up in the palette give exactly Pillow's RGB conversion of the mask.
    palette = np.array(mask.meta["palette"], dtype=np.uint8)
    with Image.open(DUBAI / "masks" / "tile_2" / "image_part_001.png") as im:
        rgb = np.array(im.convert("RGB"))
    np.testing.assert_array_equal(palette[mask.array[0]], rgb)
    # Every colour used is one of the documented Dubai classes.
    documented = {
        (60, 16, 152),
        (132, 41, 246),
        (110, 193, 228),
        (254, 221, 58),
        (226, 169, 41),
        (155, 155, 155),
    }
    assert {tuple(c) for c in np.unique(rgb.reshape(-1, 3), axis=0)} <= documented


def test_hippocampus_volume_keeps_affine_and_manifest_shape() -> None:
    path = need(HIPPO / "images" / "hippocampus_001.nii.gz")
    with open(HIPPO / "manifest.csv", newline="") as fh:
        rows = {r["case"]: r for r in csv.DictReader(fh)}
    row = rows["hippocampus_001"]
    volume = read_image(path)
    assert volume.array.shape == (1, int(row["shape_x"]), int(row["shape_y"]), int(row["shape_z"]))
    assert str(volume.array.dtype) == row["image_dtype"]
    reference = nib.load(path)
    np.testing.assert_array_equal(volume.meta["affine"], reference.affine)
    np.testing.assert_array_equal(volume.array[0], np.asarray(reference.dataobj))
    assert volume.meta["spacing"] == (1.0, 1.0, 1.0) and volume.meta["axcodes"] == ("R", "A", "S")
    label = read_image(HIPPO / "labels" / "hippocampus_003.nii.gz")
    assert label.array.dtype == np.float32  # documented float label file, kept as stored
    assert set(np.unique(label.array)) == {0.0, 1.0, 2.0}


def test_16bit_tiff_and_png_from_real_image(tmp_path: Path) -> None:
    grey = read_image(need(ISBI / "images" / "3.png")).array[0].astype(np.uint16) * 257  # full 16-bit range
    tifffile.imwrite(tmp_path / "g16.tif", grey)
    Image.fromarray(grey).save(tmp_path / "g16.png")
    rgb = read_image(need(DRIVE / "training" / "images" / "22_training.tif")).array.astype(np.uint16) * 257
    cv2.imwrite(str(tmp_path / "rgb16.png"), np.moveaxis(rgb, 0, -1)[..., ::-1])  # OpenCV writes BGR
    for name in ("g16.tif", "g16.png"):
        out = read_image(tmp_path / name)
        assert out.array.dtype == np.uint16
        np.testing.assert_array_equal(out.array[0], grey)
    out = read_image(tmp_path / "rgb16.png")  # Pillow would silently drop to 8 bits here
    assert out.array.dtype == np.uint16
    np.testing.assert_array_equal(out.array, rgb)


def test_four_band_tiffs_from_real_image(tmp_path: Path) -> None:
    rgb = read_image(need(DRIVE / "training" / "images" / "23_training.tif")).array
    four = np.concatenate([rgb, rgb[1:2] // 2])  # e.g. RGB + a NIR-like band
    tifffile.imwrite(tmp_path / "sep.tif", four, photometric="minisblack", planarconfig="separate")
    tifffile.imwrite(
        tmp_path / "rgba.tif", np.moveaxis(four, 0, -1), photometric="rgb", extrasamples=["unassalpha"]
    )
    tifffile.imwrite(
        tmp_path / "f32.tif", four.astype(np.float32) / 255, photometric="minisblack", planarconfig="separate"
    )
    for name in ("sep.tif", "rgba.tif"):
        np.testing.assert_array_equal(read_image(tmp_path / name).array, four)
    f32 = read_image(tmp_path / "f32.tif").array
    assert f32.dtype == np.float32
    np.testing.assert_array_equal(f32, four.astype(np.float32) / 255)
    assert image_shape(tmp_path / "sep.tif") == (4, 584, 565)


def test_multipage_tiff_is_a_volume(tmp_path: Path) -> None:
    slices = np.stack([read_image(need(ISBI / "images" / f"{i}.png")).array[0] for i in range(3)])
    tifffile.imwrite(tmp_path / "stack.tif", slices, photometric="minisblack")  # one page per slice
    volume = read_image(tmp_path / "stack.tif")
    assert volume.array.shape == (1, 3, 512, 512)
    np.testing.assert_array_equal(volume.array[0], slices)
    assert image_shape(tmp_path / "stack.tif") == (1, 3, 512, 512)


@pytest.mark.parametrize(
    "relative",
    [
        "isbi2012_em_membrane/images/0.png",
        "drive_retina_vessels/training/images/21_training.tif",
        "drive_retina_vessels/test/2nd_manual/01_manual2.gif",
        "dubai_aerial_landcover/images/tile_1/image_part_001.jpg",
        "msd_task04_hippocampus/labels/hippocampus_001.nii.gz",
    ],
)
def test_image_shape_matches_full_read(relative: str) -> None:
    path = need(DATA / relative)
    assert image_shape(path) == read_image(path).array.shape


# --- NIfTI round trip -------------------------------------------------------------------------


def _oblique_affine() -> np.ndarray:
    """A rotated, anisotropic, shifted affine (nothing like the identity)."""
    theta = np.deg2rad(17.0)
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([0.7, 1.3, 2.1])
    affine[:3, 3] = [-91.37, 12.113, 55.5]
    return affine


def test_nifti_round_trip_keeps_affine_exactly(tmp_path: Path) -> None:
    source = read_image(need(HIPPO / "images" / "hippocampus_004.nii.gz"))
    affine = _oblique_affine()
    write_image(tmp_path / "oblique.nii.gz", source.array, meta={**source.meta, "affine": affine})
    first = read_image(tmp_path / "oblique.nii.gz")
    # NIfTI-1 stores the affine in float32: the first write rounds it once...
    np.testing.assert_allclose(first.meta["affine"], affine, rtol=0, atol=1e-5)
    assert not np.array_equal(first.meta["affine"], np.eye(4))
    # ... and from then on read -> write -> read is bit-exact, data included.
    write_image(tmp_path / "again.nii.gz", first.array, meta=first.meta)
    second = read_image(tmp_path / "again.nii.gz")
    assert np.array_equal(second.meta["affine"], first.meta["affine"])
    assert second.array.dtype == source.array.dtype
    np.testing.assert_array_equal(second.array, source.array)
    header = nib.load(tmp_path / "again.nii.gz").header
    assert (int(header["sform_code"]), int(header["qform_code"])) == (1, 1)  # source codes kept


def test_nifti2_keeps_a_float64_affine_exactly(tmp_path: Path) -> None:
    source = read_image(need(HIPPO / "labels" / "hippocampus_004.nii.gz"))
    affine = _oblique_affine()
    assert not np.array_equal(affine.astype(np.float32).astype(np.float64), affine)  # not float32-exact
    write_image(tmp_path / "v2.nii", source.array, meta={"affine": affine, "nifti_version": 2})
    back = read_image(tmp_path / "v2.nii")
    assert back.meta["nifti_version"] == 2
    assert np.array_equal(back.meta["affine"], affine)
    np.testing.assert_array_equal(back.array, source.array)


# --- GeoTIFF ------------------------------------------------------------------------------------

UTM40N = "EPSG:32640"
TRANSFORM = (0.31, 0.0, 500123.25, 0.0, -0.31, 2789456.75)


@pytest.fixture()
def dubai_geotiff(tmp_path: Path) -> tuple[Path, np.ndarray]:
    pixels = read_image(need(DUBAI / "images" / "tile_2" / "image_part_001.jpg")).array
    path = tmp_path / "dubai.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=pixels.shape[1],
        width=pixels.shape[2],
        count=3,
        dtype="uint8",
        crs=UTM40N,
        transform=rasterio.transform.Affine(*TRANSFORM),
        tiled=True,
        blockxsize=128,
        blockysize=128,
    ) as ds:
        ds.write(pixels)
    return path, pixels


def test_geotiff_read_write_read_keeps_crs_and_transform(
    dubai_geotiff: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    path, pixels = dubai_geotiff
    first = read_image(path)
    assert first.meta["format"] == "geotiff"
    assert first.meta["transform"] == TRANSFORM
    assert rasterio.crs.CRS.from_wkt(first.meta["crs"]).to_epsg() == 32640
    np.testing.assert_array_equal(first.array, pixels)
    write_image(tmp_path / "copy.tif", first.array, meta=first.meta)
    second = read_image(tmp_path / "copy.tif")
    assert second.meta["crs"] == first.meta["crs"]
    assert second.meta["transform"] == first.meta["transform"]
    np.testing.assert_array_equal(second.array, pixels)


def test_geotiff_rotated_transform_and_nodata_are_kept(
    dubai_geotiff: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    path, pixels = dubai_geotiff
    rotated = (0.3, 0.05, 500000.125, 0.04, -0.3, 2780000.5)
    meta = {**read_image(path).meta, "transform": rotated, "nodata": 0}
    write_image(tmp_path / "rot.tif", pixels, meta=meta)
    back = read_image(tmp_path / "rot.tif")
    assert back.meta["transform"] == rotated and back.meta["nodata"] == 0


def test_window_reads_equal_slices(dubai_geotiff: tuple[Path, np.ndarray]) -> None:
    path, pixels = dubai_geotiff
    full = read_image(path)
    for row, col, h, w in [(0, 0, 100, 100), (37, 201, 130, 257), (full.array.shape[1] - 5, 3, 5, 64)]:
        part = read_image(path, window=(row, col, h, w))
        np.testing.assert_array_equal(part.array, pixels[:, row : row + h, col : col + w])
        a, b, c, d, e, f = TRANSFORM
        # The window's transform is the full one moved to the window's top-left pixel.
        assert part.meta["transform"] == pytest.approx(
            (a, b, c + a * col + b * row, d, e, f + d * col + e * row)
        )
    with pytest.raises(ValueError, match="outside"):
        read_image(path, window=(0, 0, full.array.shape[1] + 1, 10))


def test_window_reads_on_plain_tiff_and_png() -> None:
    for path in (need(DRIVE / "training" / "images" / "24_training.tif"), need(ISBI / "images" / "5.png")):
        full = read_image(path).array
        part = read_image(path, window=(10, 20, 64, 96))
        np.testing.assert_array_equal(part.array, full[:, 10:74, 20:116])
        assert part.meta["window"] == (10, 20, 64, 96)


def test_windowed_writer_matches_full_write(dubai_geotiff: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    path, pixels = dubai_geotiff
    meta = read_image(path).meta
    write_image(tmp_path / "full.tif", pixels, meta=meta)
    _, height, width = pixels.shape
    with geotiff.GeoTiffWriter(
        tmp_path / "tiled.tif", height=height, width=width, count=3, dtype="uint8", meta=meta
    ) as w:
        for row in range(0, height, 200):  # windows not aligned to the blocks, ragged edges
            for col in range(0, width, 150):
                h, wd = min(200, height - row), min(150, width - col)
                w.write(pixels[:, row : row + h, col : col + wd], (row, col, h, wd))
    full, tiled = read_image(tmp_path / "full.tif"), read_image(tmp_path / "tiled.tif")
    np.testing.assert_array_equal(tiled.array, full.array)
    for key in ("crs", "transform", "nodata", "block_shape", "dtype"):
        assert tiled.meta[key] == full.meta[key]
    assert geotiff.raster_shape(tmp_path / "tiled.tif") == pixels.shape
    # No temporary file is left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dubai.tif", "full.tif", "tiled.tif"]


def test_windowed_writer_failure_leaves_nothing(
    dubai_geotiff: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    path, pixels = dubai_geotiff
    meta = read_image(path).meta
    dest = tmp_path / "out.tif"
    with pytest.raises(RuntimeError, match="model crashed"):
        with geotiff.GeoTiffWriter(dest, height=512, width=512, count=3, dtype="uint8", meta=meta) as writer:
            writer.write(pixels[:, :256, :256], (0, 0, 256, 256))
            raise RuntimeError("model crashed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dubai.tif"]
    # A bad window is refused, and aborting keeps an existing destination untouched.
    dest.write_bytes(b"previous result")
    writer = geotiff.GeoTiffWriter(dest, height=512, width=512, count=3, dtype="uint8", meta=meta)
    with pytest.raises(ValueError, match="outside"):
        writer.write(pixels[:, :64, :64], (500, 0, 64, 64))
    with pytest.raises(ValueError, match="without loss"):
        writer.write(pixels[:, :64, :64].astype(np.float32), (0, 0, 64, 64))
    writer.abort()
    assert dest.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dubai.tif", "out.tif"]


# --- writing other formats ---------------------------------------------------------------------


def test_palette_mask_png_round_trip(tmp_path: Path) -> None:
    mask = read_image(need(DUBAI / "masks" / "tile_2" / "image_part_004.png"))
    write_image(tmp_path / "mask.png", mask.array, meta=mask.meta)
    back = read_image(tmp_path / "mask.png")
    assert (
        back.meta["mode"] == "P" and back.meta["palette"][: len(mask.meta["palette"])] == mask.meta["palette"]
    )
    np.testing.assert_array_equal(back.array, mask.array)


def test_plain_tiff_round_trip_any_dtype(tmp_path: Path) -> None:
    rgb = read_image(need(DRIVE / "training" / "images" / "25_training.tif")).array
    for array in (rgb, rgb.astype(np.uint16) * 3, rgb.astype(np.float32) / 7, rgb[:1].astype(np.int16) - 100):
        write_image(tmp_path / "x.tif", array)
        back = read_image(tmp_path / "x.tif").array
        assert back.dtype == array.dtype
        np.testing.assert_array_equal(back, array)


def test_write_refuses_what_the_format_cannot_hold(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="PNG holds"):
        write_image(tmp_path / "x.png", np.zeros((5, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="cannot write"):
        write_image(tmp_path / "x.jpg", np.zeros((3, 8, 8), np.uint8))
    assert list(tmp_path.iterdir()) == []


# --- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("relative", "name"),
    [
        ("isbi2012_em_membrane/images/0.png", "cut.png"),
        ("dubai_aerial_landcover/images/tile_1/image_part_001.jpg", "cut.jpg"),
        ("drive_retina_vessels/training/1st_manual/21_manual1.gif", "cut.gif"),
        ("drive_retina_vessels/training/images/21_training.tif", "cut.tif"),
        ("msd_task04_hippocampus/images/hippocampus_001.nii.gz", "cut.nii.gz"),
    ],
)
def test_truncated_file_raises_clear_error(relative: str, name: str, tmp_path: Path) -> None:
    data = need(DATA / relative).read_bytes()
    bad = tmp_path / name
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=rf"{name}: unreadable image \("):
        read_image(bad)


def test_truncated_geotiff_and_garbage_raise_clear_error(
    dubai_geotiff: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    path, _ = dubai_geotiff
    data = path.read_bytes()
    (tmp_path / "cut_geo.tif").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut_geo.tif: unreadable image \("):
        read_image(tmp_path / "cut_geo.tif")
    (tmp_path / "noise.png").write_bytes(b"definitely not a PNG file" * 10)
    with pytest.raises(ValueError, match=r"noise.png: unreadable image \("):
        read_image(tmp_path / "noise.png")


def test_missing_and_unsupported_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing.png"):
        read_image(tmp_path / "nothing.png")
    (tmp_path / "table.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="unsupported image type '.csv'"):
        read_image(tmp_path / "table.csv")
    with pytest.raises(ValueError, match="not supported for NIfTI"):
        read_image(need(HIPPO / "images" / "hippocampus_001.nii.gz"), window=(0, 0, 4, 4))
