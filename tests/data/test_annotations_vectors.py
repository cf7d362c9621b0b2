"""GIS vectors as labels: a UTM GeoTIFF made from real Dubai pixels, its real land-cover mask as polygons in
EPSG:4326 (reprojected by pyproj here), rasterised back on the scene's grid; errors for a file without a CRS
and for labels of another place."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("rasterio")
pytest.importorskip("pyogrio")
import pyogrio.raw  # noqa: E402
import rasterio  # noqa: E402
import shapely  # noqa: E402
from affine import Affine  # noqa: E402
from pyproj import Transformer  # noqa: E402

from unetkit.data.annotations import with_source_classes  # noqa: E402
from unetkit.data.annotations.polygons import mask_shapes  # noqa: E402
from unetkit.data.checks import check_dataset  # noqa: E402
from unetkit.data.dataset import load_samples  # noqa: E402
from unetkit.data.discovery import discover  # noqa: E402
from unetkit.data.options import DataConfig  # noqa: E402

# Dubai's mask colours -> the land-cover names of its SOURCE.md (Unlabeled stays background here).
DUBAI = {(60, 16, 152): "Building", (132, 41, 246): "Land", (110, 193, 228): "Road", (254, 221, 58): "Vegetation",
         (226, 169, 41): "Water"}  # fmt: skip
UTM = "EPSG:32640"  # Dubai's UTM zone 40N
ORIGIN = (300000.0, 2790000.0)  # metres, near Dubai
PIXEL = 0.5


@pytest.fixture(autouse=True)
def _cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def dubai_crop(datasets: Path, part: int = 1, size: int = 192) -> tuple[np.ndarray, np.ndarray]:
    """RGB pixels (3, size, size) and a class-index mask (classes sorted by name, 1-based) of a real tile."""
    root = datasets / "dubai_aerial_landcover"
    image = np.asarray(Image.open(root / "images" / "tile_1" / f"image_part_00{part}.jpg").convert("RGB"))[:size, :size]
    colours = np.asarray(Image.open(root / "masks" / "tile_1" / f"image_part_00{part}.png").convert("RGB"))[:size, :size]
    names = sorted(DUBAI.values())
    mask = np.zeros(colours.shape[:2], np.uint8)
    for rgb, name in DUBAI.items():
        mask[(colours == rgb).all(-1)] = names.index(name) + 1
    return np.moveaxis(image, -1, 0), mask


def write_scene(path: Path, pixels: np.ndarray, *, origin: tuple[float, float] = ORIGIN, crs: str = UTM) -> None:
    transform = Affine(PIXEL, 0.0, origin[0], 0.0, -PIXEL, origin[1])
    with rasterio.open(path, "w", driver="GTiff", width=pixels.shape[2], height=pixels.shape[1], count=3,
                       dtype="uint8", crs=crs, transform=transform) as ds:  # fmt: skip
        ds.write(pixels)


def write_labels(path: Path, mask: np.ndarray, *, origin: tuple[float, float] = ORIGIN, crs: str | None = "EPSG:4326") -> None:
    """The mask's regions as polygons: pixel -> UTM (the scene's transform) -> EPSG:4326 with pyproj."""
    names = sorted(DUBAI.values())
    to_wgs84 = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
    geoms, classes = [], []
    for shape in mask_shapes(mask):
        def move(xy: np.ndarray) -> np.ndarray:
            x, y = origin[0] + xy[:, 0] * PIXEL, origin[1] - xy[:, 1] * PIXEL
            return np.column_stack(to_wgs84.transform(x, y) if crs else (x, y))

        geoms.append(shapely.to_wkb(shapely.transform(shape.polygon, move)))
        classes.append(names[shape.label - 1])
    with warnings.catch_warnings():  # pyogrio warns about the missing CRS that one test writes on purpose
        warnings.simplefilter("ignore", UserWarning)
        pyogrio.raw.write(path, np.array(geoms, dtype=object), field_data=[np.array(classes, dtype=object)],
                          fields=["landcover"], crs=crs, driver="ESRI Shapefile" if path.suffix == ".shp" else "GeoJSON",
                          geometry_type="Polygon")  # fmt: skip


def test_utm_scene_with_wgs84_labels_rasterises_onto_the_right_pixels(datasets: Path, tmp_path: Path) -> None:
    pixels, mask = dubai_crop(datasets)
    write_scene(tmp_path / "scene_a.tif", pixels)
    write_labels(tmp_path / "scene_a.geojson", mask)
    config = with_source_classes(DataConfig(root=str(tmp_path), class_field="landcover"))
    present = sorted({sorted(DUBAI.values())[v - 1] for v in np.unique(mask) if v})
    assert config.classes == ["background", *present]  # the attribute's values, sorted
    found = discover(config)
    assert found.layout == "vectors" and len(found) == 1
    got = load_samples(found.samples, config)[0].mask
    names = sorted(DUBAI.values())
    for value in np.unique(mask[mask > 0]):
        truth = mask == value
        label = config.classes.index(names[value - 1])
        iou = ((got == label) & truth).sum() / ((got == label) | truth).sum()
        assert iou >= 0.99, (names[value - 1], iou)


def test_one_vector_file_for_several_scenes(datasets: Path, tmp_path: Path) -> None:
    pixels, mask = dubai_crop(datasets)
    far = (ORIGIN[0] + 5000.0, ORIGIN[1])
    write_scene(tmp_path / "a.tif", pixels)
    write_scene(tmp_path / "b.tif", pixels, origin=far)  # 5 km east: no label there
    labels = tmp_path / "labels.geojson"
    write_labels(labels, mask)
    config = with_source_classes(DataConfig(root=str(tmp_path), vector_labels=str(labels), class_field="landcover"))
    report = check_dataset(config)
    assert [s.key for s in discover(config).samples] == ["a"]
    skipped = [f for f in report.warnings if f.code == "scene_unlabelled"]
    assert len(skipped) == 1 and "b.tif" in skipped[0].message


def test_vector_file_without_crs_and_labels_of_another_place_are_errors(datasets: Path, tmp_path: Path) -> None:
    pixels, mask = dubai_crop(datasets)
    write_scene(tmp_path / "a.tif", pixels)
    write_labels(tmp_path / "a.shp", mask, crs=None)  # a shapefile without its .prj
    assert not (tmp_path / "a.prj").exists()
    report = check_dataset(DataConfig(root=str(tmp_path), class_field="landcover"))
    assert not report.ok and "a.shp: the vector file has no CRS" in report.errors[0].message
    for sidecar in tmp_path.glob("a.*"):
        if sidecar.suffix != ".tif":
            sidecar.unlink()
    write_labels(tmp_path / "a.geojson", mask, origin=(ORIGIN[0] + 20000.0, ORIGIN[1]))
    report = check_dataset(with_source_classes(DataConfig(root=str(tmp_path), class_field="landcover")))
    errors = [f for f in report.errors if f.code == "no_overlap"]
    assert len(errors) == 1 and "no feature overlaps scene a.tif" in errors[0].message and "EPSG:4326" in errors[0].message
    report = check_dataset(DataConfig(root=str(tmp_path), class_field="kind"))
    assert "no attribute 'kind' (attributes: landcover)" in report.errors[0].message
