"""CVAT (segmentation masks 1.1 folder and zip, XML for images 1.1) and Label Studio (brush RLE, percent
polygons) exports written from real masks, read back as datasets; Label Studio's brush RLE against bytes that
Label Studio's own converter (label-studio-converter 0.0.59, ``brush.mask2rle``) produced."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from _labels import binary_mask, magnetic_cases
from PIL import Image

from unetkit.data.checks import check_dataset
from unetkit.data.dataset import load_samples
from unetkit.data.discovery import discover
from unetkit.data.options import DataConfig

pytest.importorskip("pycocotools")
pytest.importorskip("rasterio")
from unetkit.data.annotations import with_source_classes  # noqa: E402
from unetkit.data.annotations.brush_rle import mask_to_rle, rle_to_mask  # noqa: E402
from unetkit.data.annotations.polygons import mask_shapes  # noqa: E402

COLOURS = {"background": (0, 0, 0), "Blowhole": (250, 50, 83), "Crack": (36, 179, 83)}


@pytest.fixture(autouse=True)
def _cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def loaded(config: DataConfig) -> dict[str, np.ndarray]:
    config = with_source_classes(config)
    return {s.key: s.mask for s in load_samples(discover(config).samples, config)}  # type: ignore[misc]


def write_cvat_masks(datasets: Path, folder: Path) -> list:
    cases = magnetic_cases(datasets)
    (folder / "SegmentationClass").mkdir(parents=True)
    lines = ["# label:color_rgb:parts:actions"] + [f"{n}:{','.join(map(str, c))}::" for n, c in COLOURS.items()]
    (folder / "labelmap.txt").write_text("\n".join(lines) + "\n")
    palette = np.array(list(COLOURS.values()), dtype=np.uint8)
    for name, _, mask in cases:
        out = folder / "SegmentationClass" / Path(name).with_suffix(".png")
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(palette[mask]).save(out)
    return cases


def test_cvat_segmentation_masks_folder_and_zip(datasets: Path, tmp_path: Path) -> None:
    export = tmp_path / "cvat"
    cases = write_cvat_masks(datasets, export)
    images = str(datasets / "magnetic_tile_defects" / "images")
    config = DataConfig(root=str(export), image_dir=images)
    assert with_source_classes(config).classes == ["background", "Blowhole", "Crack"]
    masks = loaded(config)
    assert sorted(masks) == sorted(str(Path(n).with_suffix("")) for n, _, _ in cases)
    for name, _, truth in cases:
        np.testing.assert_array_equal(masks[str(Path(name).with_suffix(""))], truth)
    archive = tmp_path / "task_1-segmentation_mask_1.1.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in export.rglob("*"):
            z.write(p, p.relative_to(export).as_posix())
    assert loaded(DataConfig(root=str(archive), image_dir=images)).keys() == masks.keys()


def test_cvat_colour_missing_from_labelmap_names_file_and_colour(datasets: Path, tmp_path: Path) -> None:
    export = tmp_path / "cvat"
    cases = write_cvat_masks(datasets, export)
    bad = export / "SegmentationClass" / Path(cases[0][0]).with_suffix(".png")
    pixels = np.asarray(Image.open(bad)).copy()
    pixels[:3, :3] = (1, 2, 3)
    Image.fromarray(pixels).save(bad)
    report = check_dataset(with_source_classes(DataConfig(root=str(export), image_dir=str(datasets / "magnetic_tile_defects" / "images"))))
    errors = [f for f in report.errors if f.code == "unknown_colours"]
    assert len(errors) == 1 and bad.name in errors[0].message and "#010203 (9 px)" in errors[0].message


def _cvat_rle(mask: np.ndarray) -> tuple[str, int, int, int, int]:
    """CVAT XML mask RLE written by hand: runs inside the bounding box, row by row, starting with background."""
    ys, xs = np.nonzero(mask)
    top, left, bottom, right = ys.min(), xs.min(), ys.max() + 1, xs.max() + 1
    flat = mask[top:bottom, left:right].ravel().astype(np.int8)
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    runs = runs if flat[0] == 0 else [0, *runs]
    return ", ".join(map(str, runs)), int(left), int(top), int(right - left), int(bottom - top)


def test_cvat_xml_polygons_and_masks_from_real_masks(datasets: Path, tmp_path: Path) -> None:
    cases = magnetic_cases(datasets)
    parts = ["<?xml version='1.0' encoding='utf-8'?>", "<annotations><version>1.1</version><meta><task><labels>"]
    parts += [f"<label><name>{n}</name><color>#000000</color></label>" for n in ("Crack", "Blowhole")]
    parts.append("</labels></task></meta>")
    for i, (name, _, mask) in enumerate(cases):
        h, w = mask.shape
        parts.append(f'<image id="{i}" name="{name}" width="{w}" height="{h}">')
        parts.append('<box label="Crack" occluded="0" xtl="1" ytl="1" xbr="5" ybr="5" z_order="0"></box>')
        label = "Blowhole" if mask.max() == 1 else "Crack"
        if i % 2:
            rle, left, top, bw, bh = _cvat_rle(mask > 0)
            parts.append(f'<mask label="{label}" rle="{rle}" left="{left}" top="{top}" width="{bw}" height="{bh}" z_order="0"></mask>')
        else:
            for shape in mask_shapes(mask):
                pts = ";".join(f"{x:.2f},{y:.2f}" for x, y in list(shape.polygon.exterior.coords)[:-1])
                parts.append(f'<polygon label="{label}" points="{pts}" z_order="0"></polygon>')
        parts.append("</image>")
    parts.append("</annotations>")
    (tmp_path / "annotations.xml").write_text("\n".join(parts))
    config = DataConfig(root=str(tmp_path / "annotations.xml"), image_dir=str(datasets / "magnetic_tile_defects" / "images"))
    # Label order is the <meta> order: Crack first.
    assert with_source_classes(config).classes == ["background", "Crack", "Blowhole"]
    masks = loaded(config)
    for name, _, truth in cases:
        expected = np.select([truth == 1, truth == 2], [2, 1], 0)
        got = masks[str(Path(name).with_suffix(""))]
        for label in (1, 2):
            a, b = got == label, expected == label
            if b.any():
                assert (a & b).sum() / (a | b).sum() >= 0.99
    report = check_dataset(with_source_classes(config))
    assert any(f.code == "unsupported_shape" and "box (6)" in f.message for f in report.warnings)


# Bytes written by label-studio-converter 0.0.59 ``brush.mask2rle`` for these masks (Label Studio's reference).
LS_5x6 = [0, 0, 0, 120, 57, 27, 252, 127, 248, 108, 2, 223, 253, 176, 11, 127, 246, 192, 45, 255, 225, 176, 0]


def test_brush_rle_matches_label_studio_bytes() -> None:
    mask = np.zeros((5, 6), bool)
    mask[1:4, 2:5] = True
    mask[0, 0] = True
    assert mask_to_rle(mask) == LS_5x6
    np.testing.assert_array_equal(rle_to_mask(LS_5x6, height=5, width=6), mask)
    with pytest.raises(ValueError, match="declares 120 values, more than the image's 80"):
        rle_to_mask(LS_5x6, height=4, width=5)
    with pytest.raises(ValueError, match="ends before"):
        rle_to_mask(LS_5x6[:12], height=5, width=6)


def test_brush_rle_round_trip_on_real_masks(datasets: Path) -> None:
    for path in sorted((datasets / "kvasir_seg_polyps" / "masks").iterdir())[:3]:
        mask = binary_mask(path)
        np.testing.assert_array_equal(rle_to_mask(mask_to_rle(mask), height=mask.shape[0], width=mask.shape[1]), mask)


def test_label_studio_export_with_brush_and_polygons(datasets: Path, tmp_path: Path) -> None:
    root = datasets / "kvasir_seg_polyps"
    files = sorted((root / "masks").iterdir())[:4]
    tasks = []
    for i, path in enumerate(files):
        mask = binary_mask(path)
        h, w = mask.shape
        common = {"from_name": "tag", "to_name": "image", "original_width": w, "original_height": h, "image_rotation": 0}
        if i % 2:
            result = [{**common, "id": "b", "type": "brushlabels",
                       "value": {"format": "rle", "rle": mask_to_rle(mask), "brushlabels": ["polyp"]}}]  # fmt: skip
        else:
            result = []
            for n, shape in enumerate(mask_shapes(mask.astype(np.uint8))):
                pts = [[x * 100 / w, y * 100 / h] for x, y in list(shape.polygon.exterior.coords)[:-1]]
                result.append({**common, "id": f"p{n}", "type": "polygonlabels",
                               "value": {"points": pts, "polygonlabels": ["polyp"], "closed": True}})  # fmt: skip
        cancelled = {"id": 1, "was_cancelled": True, "result": [], "updated_at": "2026-01-02T00:00:00Z"}
        tasks.append({"id": 10 + i, "data": {"image": f"/data/upload/3/{i:08x}-{path.name}"},
                      "annotations": [{"id": 2, "result": result, "updated_at": "2026-01-01T00:00:00Z"}, cancelled]})  # fmt: skip
    tasks.append({"id": 99, "data": {"image": "/data/upload/3/0000abcd-unlabelled.jpg"}, "annotations": []})
    export = tmp_path / "project-3-at-2026-12-07.json"
    export.write_text(json.dumps(tasks))
    config = DataConfig(root=str(export), image_dir=str(root / "images"))
    assert with_source_classes(config).classes == ["background", "polyp"]
    masks = loaded(config)
    assert len(masks) == 4
    for path in files:
        truth = binary_mask(path)
        got = masks[next(k for k in masks if k.endswith(path.stem))] == 1
        assert (got & truth).sum() / (got | truth).sum() >= 0.99


def test_cvat_video_export_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "annotations.xml"
    path.write_text("<annotations><version>1.1</version><track id='0' label='car'></track></annotations>")
    report = check_dataset(DataConfig(root=str(path)))
    assert "export the task as 'CVAT for images 1.1'" in report.errors[0].message


def test_label_studio_result_without_original_size_takes_the_image_size(datasets: Path, tmp_path: Path) -> None:
    path = sorted((datasets / "kvasir_seg_polyps" / "masks").iterdir())[0]
    mask = binary_mask(path)
    value = {"format": "rle", "rle": mask_to_rle(mask), "brushlabels": ["polyp"]}
    tasks = [{"id": 1, "data": {"image": f"/data/upload/1/0a1b2c3d-{path.name}"},
              "annotations": [{"id": 1, "result": [{"type": "brushlabels", "value": value}]}]}]  # fmt: skip
    export = tmp_path / "old.json"
    export.write_text(json.dumps(tasks))
    (got,) = loaded(DataConfig(root=str(export), image_dir=str(datasets / "kvasir_seg_polyps" / "images"))).values()
    np.testing.assert_array_equal(got == 1, mask)
