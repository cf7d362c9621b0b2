"""Training straight from annotation exports through the CLI (tiny budgets: the pipeline must run, not learn):
a COCO file of real magnetic-tile defects, and a UTM GeoTIFF with EPSG:4326 vector labels whose predicted
polygons are then checked to lie on the scene's own pixels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pycocotools")
pytest.importorskip("pyogrio")
import pyogrio.raw  # noqa: E402
import rasterio  # noqa: E402
import shapely  # noqa: E402
from rasterio import features  # noqa: E402
from test_annotations_coco import write_magnetic_coco  # noqa: E402
from test_annotations_vectors import dubai_crop, write_labels, write_scene  # noqa: E402

from unetkit.cli import main  # noqa: E402
from unetkit.config import Plan  # noqa: E402

TINY = ["--encoder", "plain", "--set", "model.kwargs.width=4", "--set", "model.kwargs.depth=2",
        "--set", "train.patch_size=[64,64]", "--set", "train.batch_size=2", "--set", "train.time_budget_s=null",
        "--set", "train.steps=6", "--set", "train.val_every=3", "--set", "train.warmup_steps=1",
        "--set", "train.align=false", "--set", "infer.tile_size=[64,64]", "--set", "infer.tta=none"]  # fmt: skip


@pytest.fixture(autouse=True)
def _cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_train_and_evaluate_from_a_coco_file(datasets: Path, tmp_path: Path) -> None:
    path, cases = write_magnetic_coco(datasets, tmp_path, encoding="polygons")
    images = str(datasets / "magnetic_tile_defects" / "images")
    run = tmp_path / "run"
    assert main(["train", str(path), "--image-dir", images, "--out", str(run), *TINY]) == 0
    plan = Plan.load(run / "plan.yaml")
    assert plan.data.classes == ["background", "Blowhole", "Crack"] and plan.model.kwargs["classes"] == 3
    assert main(["evaluate", str(run), str(path), "--image-dir", images, "--out", str(tmp_path / "eval")]) == 0
    assert json.loads((tmp_path / "eval" / "summary.json").read_text())["images"] == len(cases)


def test_train_on_a_utm_scene_with_wgs84_labels_and_polygons_land_on_its_pixels(datasets: Path, tmp_path: Path) -> None:
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    for part in (1, 2):
        pixels, mask = dubai_crop(datasets, part=part, size=128)
        write_scene(scenes / f"part{part}.tif", pixels)
        write_labels(scenes / f"part{part}.geojson", mask)
    run = tmp_path / "run"
    assert main(["train", str(scenes), "--class-field", "landcover", "--out", str(run), *TINY,
                 "--set", "train.val_fraction=0.5"]) == 0  # fmt: skip
    out = tmp_path / "pred"
    assert main(["predict", str(run), str(scenes / "part1.tif"), "--out", str(out), "--no-overlay",
                 "--format", "gpkg"]) == 0  # fmt: skip
    with rasterio.open(out / "part1.tif") as ds:
        predicted, transform, crs = ds.read(1), ds.transform, ds.crs
    meta, _, geoms, fields = pyogrio.raw.read(out / "part1.gpkg")
    assert crs.to_epsg() == 32640 and "32640" in meta["crs"]
    class_id = fields[list(meta["fields"]).index("class_id")]
    burnt = features.rasterize([(shapely.from_wkb(g), int(c)) for g, c in zip(geoms, class_id, strict=True)],
                               out_shape=predicted.shape, transform=transform)  # fmt: skip
    np.testing.assert_array_equal(burnt, predicted)  # on the right ground, to the pixel
    labelled = predicted > 0
    if labelled.any():
        assert ((burnt > 0) & labelled).sum() / ((burnt > 0) | labelled).sum() == 1.0


@pytest.mark.parametrize("kind", ["cvat_masks", "cvat_xml", "labelstudio"])
def test_train_from_cvat_and_label_studio_exports(datasets: Path, tmp_path: Path, kind: str) -> None:
    from test_annotations_tools import write_cvat_masks

    from unetkit.data.annotations.brush_rle import mask_to_rle
    from unetkit.data.annotations.writers import ShapeOptions, cvat_document, cvat_image

    images = datasets / "magnetic_tile_defects" / "images"
    export = tmp_path / "export"
    cases = write_cvat_masks(datasets, export)  # real Blowhole / Crack masks
    classes = ["background", "Blowhole", "Crack"]
    if kind == "cvat_xml":
        elements = [cvat_image(mask, image_id=i, name=name, classes=classes, options=ShapeOptions())
                    for i, (name, _, mask) in enumerate(cases)]  # fmt: skip
        export = tmp_path / "annotations.xml"
        export.write_text(cvat_document(elements, classes=classes))
    elif kind == "labelstudio":
        tasks = []
        for i, (name, _, mask) in enumerate(cases):
            h, w = mask.shape
            result = [{"type": "brushlabels", "original_width": w, "original_height": h, "value": {
                "format": "rle", "rle": mask_to_rle(mask == label), "brushlabels": [classes[label]]}}
                for label in np.unique(mask[mask > 0])]  # fmt: skip
            tasks.append({"id": i, "data": {"image": f"/data/upload/1/{i:08x}-{Path(name).name}"},
                          "annotations": [{"id": i, "result": result}]})  # fmt: skip
        export = tmp_path / "project.json"
        export.write_text(json.dumps(tasks))
    run = tmp_path / "run"
    assert main(["train", str(export), "--image-dir", str(images), "--out", str(run), *TINY]) == 0
    assert Plan.load(run / "plan.yaml").data.classes == classes
