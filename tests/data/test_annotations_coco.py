"""COCO JSON as a dataset: real masks -> COCO (polygons, compressed RLE, crowd RLE) -> unetkit's masks, against
the originals and against pycocotools' own reading; class order, overlaps, image lookup and the check report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _labels import binary_mask, magnetic_cases, rle_uncompressed

from unetkit.data.checks import check_dataset
from unetkit.data.dataset import load_samples
from unetkit.data.discovery import discover
from unetkit.data.options import DataConfig

pytest.importorskip("pycocotools")
pytest.importorskip("shapely")
pytest.importorskip("rasterio")
from pycocotools.coco import COCO  # noqa: E402

from unetkit.data.annotations import with_source_classes  # noqa: E402
from unetkit.data.annotations.raster import encode_rle  # noqa: E402
from unetkit.data.annotations.writers import ShapeOptions, coco_annotations  # noqa: E402


@pytest.fixture(autouse=True)
def _cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the mask cache goes to ~/.cache/unetkit/labels


def write_magnetic_coco(datasets: Path, folder: Path, *, encoding: str) -> tuple[Path, list]:
    """COCO file for Blowhole/Crack tiles; images stay in the shared dataset (file_name with sub-folders)."""
    cases = magnetic_cases(datasets)
    images, anns = [], []
    for image_id, (name, _, mask) in enumerate(cases, start=1):
        h, w = mask.shape
        images.append({"id": image_id, "file_name": name, "height": h, "width": w})
        options = ShapeOptions(rle=encoding == "rle")
        if encoding == "crowd":
            for label in np.unique(mask[mask > 0]):
                counts = rle_uncompressed(mask == label)
                anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": int(label), "iscrowd": 1,
                             "segmentation": {"size": [h, w], "counts": counts}})  # fmt: skip
        else:
            anns += coco_annotations(mask, image_id=image_id, first_id=len(anns) + 1, options=options)
    coco = {"images": images, "annotations": anns,
            "categories": [{"id": 2, "name": "Crack"}, {"id": 1, "name": "Blowhole"}]}  # fmt: skip
    path = folder / "annotations" / "instances_default.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(coco))
    return path, cases


def config_for(path: Path, image_dir: str = "") -> DataConfig:
    return with_source_classes(DataConfig(root=str(path), image_dir=image_dir))


@pytest.mark.parametrize("encoding", ["polygons", "rle", "crowd"])
def test_real_masks_round_trip_through_coco(datasets: Path, tmp_path: Path, encoding: str) -> None:
    path, cases = write_magnetic_coco(datasets, tmp_path, encoding=encoding)
    config = config_for(path, str(datasets / "magnetic_tile_defects" / "images"))
    assert config.classes == ["background", "Blowhole", "Crack"]  # category id order, not file order
    found = discover(config)
    assert found.layout == "coco" and len(found) == len(cases)
    reference = COCO(str(path))  # the COCO API's own reading of the same file
    by_name = {im["file_name"]: im["id"] for im in reference.dataset["images"]}
    for sample in load_samples(found.samples, config):
        name = f"{sample.key}.jpg"
        truth = next(mask for n, _, mask in cases if n == name)
        expected = np.zeros_like(truth)
        for ann in reference.loadAnns(reference.getAnnIds(imgIds=[by_name[name]])):
            expected[reference.annToMask(ann) > 0] = ann["category_id"]
        np.testing.assert_array_equal(sample.mask, expected)  # what pycocotools paints
        for label in (1, 2):  # against the real mask: exact here (pixel-edge polygons), IoU >= 0.99 required
            a, b = sample.mask == label, truth == label
            if b.any():
                assert (a & b).sum() / (a | b).sum() >= 0.99


def test_classes_follow_category_ids_and_background_category_is_class_0(tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    from PIL import Image

    Image.fromarray(np.zeros((10, 10), np.uint8)).save(image)
    coco = {"images": [{"id": 7, "file_name": "a.png", "height": 10, "width": 10}],
            "annotations": [{"id": 1, "image_id": 7, "category_id": 0, "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]]},
                            {"id": 2, "image_id": 7, "category_id": 5, "segmentation": [[0, 0, 4, 0, 4, 4, 0, 4]]}],
            "categories": [{"id": 5, "name": "scratch"}, {"id": 0, "name": "_background_"}, {"id": 3, "name": "dent"}]}  # fmt: skip
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(coco))
    config = config_for(path)
    assert config.classes == ["background", "dent", "scratch"]
    mask = load_samples(discover(config).samples, config)[0].mask
    expected = np.zeros((10, 10), np.int64)
    expected[:4, :4] = 2  # "scratch" (id 5) is class 2; the background category painted 0 first
    np.testing.assert_array_equal(mask, expected)


def test_later_annotation_wins_where_two_overlap(tmp_path: Path) -> None:
    from PIL import Image

    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(tmp_path / "x.png")
    square_a = [0, 0, 8, 0, 8, 8, 0, 8]  # pixels [0, 8) x [0, 8)
    square_b = [4, 4, 12, 4, 12, 12, 4, 12]  # pixels [4, 12) x [4, 12)
    coco = {"images": [{"id": 1, "file_name": "x.png", "height": 12, "width": 12}],
            "annotations": [{"id": 10, "image_id": 1, "category_id": 1, "segmentation": [square_a]},
                            {"id": 11, "image_id": 1, "category_id": 2, "segmentation": [square_b]}],
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}  # fmt: skip
    path = tmp_path / "c.json"
    path.write_text(json.dumps(coco))
    config = config_for(path)
    mask = load_samples(discover(config).samples, config)[0].mask
    expected = np.zeros((12, 12), np.int64)
    expected[:8, :8] = 1
    expected[4:, 4:] = 2  # drawn later: on top
    np.testing.assert_array_equal(mask, expected)
    coco["annotations"].reverse()
    path.write_text(json.dumps(coco))
    mask = load_samples(discover(config_for(path)).samples, config)[0].mask
    expected[:8, :8] = 1
    np.testing.assert_array_equal(mask, expected)


def test_check_names_each_problem_of_a_bad_coco_file(datasets: Path, tmp_path: Path) -> None:
    path, cases = write_magnetic_coco(datasets, tmp_path, encoding="polygons")
    coco = json.loads(path.read_text())
    h, w = coco["images"][0]["height"], coco["images"][0]["width"]
    coco["images"].append({"id": 99, "file_name": "Crack/not_there.jpg", "height": h, "width": w})
    coco["images"].append({"id": 98, "file_name": cases[1][0], "height": h, "width": w})  # listed twice, no labels
    coco["annotations"] += [
        {"id": 501, "image_id": 1, "category_id": 9, "segmentation": [[1, 1, 5, 1, 5, 5]]},
        {"id": 502, "image_id": 1, "category_id": 1, "segmentation": [[0, 0, 10, 10, 10, 0, 0, 10]]},  # a bow tie
        {"id": 503, "image_id": 1, "category_id": 1, "segmentation": [[w + 5, 0, w + 9, 0, w + 9, 4]]},
        {"id": 504, "image_id": 1, "category_id": 1, "segmentation": [[w - 2, 0, w + 3, 0, w + 3, 4]]},
        {"id": 505, "image_id": 77, "category_id": 1, "segmentation": [[1, 1, 5, 1, 5, 5]]},
    ]
    path.write_text(json.dumps(coco))
    report = check_dataset(config_for(path, str(datasets / "magnetic_tile_defects" / "images")))
    text = report.to_text()
    by_code = {f.code: f for f in report.findings}
    assert "category id(s) not in 'categories': 9 (1 annotation(s))" in by_code["unknown_category"].message
    assert by_code["unknown_category"].severity == "error" and not report.ok
    assert "not_there.jpg" in by_code["missing_image"].message
    invalid = [f.message for f in report.findings if f.code == "invalid_polygon"]
    assert len(invalid) == 1 and "annotation 502" in invalid[0] and "Self-intersection" in invalid[0]
    outside = sorted(f.message for f in report.findings if f.code == "outside_image")
    assert len(outside) == 2 and "annotation 503" in outside[0] and "entirely" in outside[0]
    assert "annotation 504" in outside[1] and "clipped" in outside[1]
    assert "annotation 505: image_id 77 is not in 'images'" in by_code["unknown_image"].message
    # The image listed twice has no annotation; the missing one is reported as missing, not as unannotated.
    assert "1 image(s) of 8 have no annotation" in by_code["no_annotations"].message
    assert "not_there.jpg" not in by_code["no_annotations"].message
    assert "coco export" in text and "classes background, Blowhole, Crack" in text
    summary = report.summary["annotations"]
    assert summary["images"] == 8 and summary["images_found"] == 7


def test_images_are_found_by_base_name_under_image_dir(datasets: Path, tmp_path: Path) -> None:
    path, cases = write_magnetic_coco(datasets, tmp_path, encoding="rle")
    coco = json.loads(path.read_text())
    for image in coco["images"]:
        image["file_name"] = "/home/someone/task_12/" + Path(image["file_name"]).name  # another machine's paths
    path.write_text(json.dumps(coco))
    found = discover(config_for(path, str(datasets / "magnetic_tile_defects" / "images")))
    assert [Path(str(s.image)).name for s in found.samples] == sorted(Path(c[0]).name for c in cases)


def test_rle_encoding_is_exact_on_real_masks(datasets: Path) -> None:
    from pycocotools import mask as mask_api

    for mask_file in sorted((datasets / "kvasir_seg_polyps" / "masks").iterdir())[:3]:
        mask = binary_mask(mask_file)
        rle = encode_rle(mask)
        decoded = mask_api.decode({"size": rle["size"], "counts": rle["counts"].encode()})
        np.testing.assert_array_equal(decoded.astype(bool), mask)
        assert rle_uncompressed(mask)[0] >= 0


def test_roboflow_group_category_is_not_a_class(tmp_path: Path) -> None:
    from PIL import Image

    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "a.png")
    coco = {"images": [{"id": 0, "file_name": "a.png", "height": 10, "width": 10}],
            "annotations": [{"id": 0, "image_id": 0, "category_id": 2, "segmentation": [[0, 0, 4, 0, 4, 4, 0, 4]]}],
            "categories": [{"id": 0, "name": "defects", "supercategory": "none"},
                           {"id": 1, "name": "crack", "supercategory": "defects"},
                           {"id": 2, "name": "hole", "supercategory": "defects"}]}  # fmt: skip
    path = tmp_path / "_annotations.coco.json"
    path.write_text(json.dumps(coco))
    assert config_for(path).classes == ["background", "crack", "hole"]


def test_label_studio_json_min_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "min.json"
    path.write_text(json.dumps([{"image": "/data/upload/1/a.png", "id": 1,
                                 "tag": [{"format": "rle", "rle": [0], "brushlabels": ["x"]}]}]))  # fmt: skip
    report = check_dataset(DataConfig(root=str(path)))
    assert "export the project as JSON (not JSON-MIN)" in report.errors[0].message
