"""``predict --format``: each annotation format read back (pycocotools, our readers, pyogrio) gives the
predicted mask again; georeferenced polygons land on the scene's pixels with areas in m²; Deepness metadata."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from _run_factory import make_run
from PIL import Image

from unetkit.cli import main

pytest.importorskip("pycocotools")
pytest.importorskip("pyogrio")
import pyogrio.raw  # noqa: E402
import rasterio  # noqa: E402
import shapely  # noqa: E402
from affine import Affine  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402
from rasterio import features  # noqa: E402

from unetkit.data.annotations.brush_rle import rle_to_mask  # noqa: E402
from unetkit.data.annotations.cvat import cvat_mask  # noqa: E402


@pytest.fixture(scope="module")
def run_3class(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("run"), in_channels=3, classes=3, tile=96, overlap=0.25)


def _kvasir(datasets: Path, tmp_path: Path, n: int = 2) -> list[Path]:
    out = []
    for path in sorted((datasets / "kvasir_seg_polyps" / "images").iterdir())[:n]:
        small = tmp_path / f"{path.stem}.png"
        Image.open(path).convert("RGB").resize((160, 128)).save(small)
        out.append(small)
    return out


def test_every_format_reads_back_to_the_predicted_mask(datasets: Path, run_3class: Path, tmp_path: Path) -> None:
    images = _kvasir(datasets, tmp_path)
    out = tmp_path / "out"
    code = main(["predict", str(run_3class), *map(str, images), "--out", str(out), "--no-overlay",
                 "--format", "png,coco,cvat,labelstudio,geojson", "--model-version", "v7"])  # fmt: skip
    assert code == 0
    masks = {p.name: np.asarray(Image.open(out / f"{p.stem}.png")).astype(np.int64) for p in images}
    assert any(len(np.unique(m)) > 2 for m in masks.values())  # the untrained model does predict classes

    coco = COCO(str(out / "predictions.coco.json"))  # loads in the reference API
    for image in coco.dataset["images"]:
        painted = np.zeros((image["height"], image["width"]), np.int64)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]])):
            painted[coco.annToMask(ann) > 0] = ann["category_id"]
            assert 0.0 <= ann["score"] <= 1.0
        np.testing.assert_array_equal(painted, masks[image["file_name"]])

    tasks = json.loads((out / "predictions.labelstudio.json").read_text())
    for task in tasks:
        truth = masks[Path(task["data"]["image"]).name]
        (prediction,) = task["predictions"]
        assert prediction["model_version"] == "v7" and 0.0 <= prediction["score"] <= 1.0
        painted = np.zeros_like(truth)
        for result in prediction["result"]:
            label = ["background", "class_1", "class_2"].index(result["value"]["brushlabels"][0])
            painted[rle_to_mask(result["value"]["rle"], height=result["original_height"],
                                width=result["original_width"])] = label  # fmt: skip
        np.testing.assert_array_equal(painted, truth)

    root = ET.parse(out / "predictions.cvat.xml").getroot()
    for image in root.iter("image"):
        h, w = int(image.get("height")), int(image.get("width"))
        painted = np.zeros((h, w), np.int64)
        for shape in image:
            label = ["background", "class_1", "class_2"].index(shape.get("label"))
            if shape.tag == "mask":
                painted[cvat_mask(shape, h, w)] = label
            else:
                pts = [tuple(map(float, p.split(","))) for p in shape.get("points").split(";")]
                painted[features.rasterize([(shapely.Polygon(pts), 1)], out_shape=(h, w)) > 0] = label
        np.testing.assert_array_equal(painted, masks[image.get("name")])

    for path in images:  # no CRS: pixel coordinates, areas left empty
        meta, _, geoms, fields = pyogrio.raw.read(out / f"{path.stem}.geojson")
        # No CRS is written (GDAL reads a GeoJSON without one as WGS84, RFC 7946); no area in m² either.
        assert meta["crs"] in (None, "EPSG:4326") and "area_m2" not in list(meta["fields"])
        burnt = features.rasterize([(shapely.from_wkb(g), int(c)) for g, c in zip(geoms, fields[1], strict=True)],
                                   out_shape=masks[path.name].shape)  # fmt: skip
        np.testing.assert_array_equal(burnt, masks[path.name])


def test_georeferenced_polygons_in_scene_crs_with_m2_and_probability(datasets: Path, tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", in_channels=3, classes=3, tile=96, overlap=0.25)
    pixels = np.asarray(Image.open(sorted((datasets / "dubai_aerial_landcover" / "images" / "tile_1").iterdir())[0])
                        .convert("RGB"))[:128, :160]  # fmt: skip
    transform = Affine(0.5, 0.0, 300000.0, 0.0, -0.5, 2790000.0)
    scene = tmp_path / "scene.tif"
    with rasterio.open(scene, "w", driver="GTiff", width=160, height=128, count=3, dtype="uint8", crs="EPSG:32640",
                       transform=transform) as ds:  # fmt: skip
        ds.write(np.moveaxis(pixels, -1, 0))
    out = tmp_path / "out"
    assert main(["predict", str(run), str(scene), "--out", str(out), "--no-overlay", "--format", "gpkg,geojson",
                 "--min-area", "4"]) == 0  # fmt: skip
    with rasterio.open(out / "scene.tif") as ds:
        mask = ds.read(1).astype(np.int64)
    with rasterio.open(out / "scene_prob.tif") as ds:
        prob = ds.read()
    meta, _, geoms, fields = pyogrio.raw.read(out / "scene.gpkg")
    assert "32640" in meta["crs"]
    names = list(meta["fields"])
    polygons = [shapely.from_wkb(g) for g in geoms]
    # Burnt back on the scene's grid, the polygons give the predicted mask (regions under 4 px left out).
    burnt = features.rasterize([(p, int(c)) for p, c in zip(polygons, fields[names.index("class_id")], strict=True)],
                               out_shape=mask.shape, transform=transform)  # fmt: skip
    kept = burnt > 0
    np.testing.assert_array_equal(burnt[kept], mask[kept])
    for p, pixels_, area, score, c in zip(polygons, *(fields[names.index(k)] for k in ("pixels", "area_m2", "mean_prob", "class_id")),
                                          strict=True):  # fmt: skip
        assert area == pytest.approx(pixels_ * 0.25) and pixels_ >= 4  # 0.5 m pixels
        region = features.rasterize([(p, 1)], out_shape=mask.shape, transform=transform) > 0
        assert score == pytest.approx(float(prob[int(c)][region].mean()), rel=1e-5)
    assert (out / "scene.geojson").is_file()


def test_unknown_format_is_a_one_line_error(run_3class: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    assert main(["predict", str(run_3class), str(image), "--out", str(tmp_path / "o"), "--format", "png,shp"]) != 0
    assert "unknown format shp; valid: png, coco, cvat, labelstudio, geojson, gpkg" in capsys.readouterr().err
