"""Discovery (layouts, name matching, groups, lists) and loading the real datasets through the public API.

Class frequencies of the real datasets are checked against values computed here directly with PIL / nibabel.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from unetkit.data.dataset import load_sample, load_samples
from unetkit.data.discovery import discover
from unetkit.data.fingerprint import fingerprint
from unetkit.data.matching import match_keys
from unetkit.data.options import DataConfig
from unetkit.data.splits import stratified_split

# --- helpers ----------------------------------------------------------------------------------------


def png(path: Path, array: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((8, 8), np.uint8) if array is None else array).save(path)
    return path


def pixels(path: Path, mode: str | None = None) -> np.ndarray:
    """A file's pixels read directly with PIL (the independent oracle)."""
    with Image.open(path) as im:
        return np.array(im.convert(mode) if mode else im)


def keys(result) -> list[str]:  # type: ignore[no-untyped-def]
    return [s.key for s in result.samples]


# --- name matching ----------------------------------------------------------------------------------


def test_match_keys_exact_then_shared_leading_id() -> None:
    images = ["21_training", "22_training", "sub/x"]
    masks = ["22_manual1", "21_manual1", "sub/x"]
    assert match_keys(images, masks) == {
        "21_training": "21_manual1",
        "22_training": "22_manual1",
        "sub/x": "sub/x",
    }


def test_match_keys_numbers_and_whole_name_prefix() -> None:
    assert match_keys(["img_001", "img_002"], ["label_002", "label_001"]) == {
        "img_001": "label_001",
        "img_002": "label_002",
    }
    assert match_keys(["scan"], ["scan_mask"]) == {"scan": "scan_mask"}


def test_match_keys_refuses_ambiguous_and_word_only_matches() -> None:
    assert match_keys(["a_1"], ["a_1_x", "a_1_y"]) == {}  # two equally good masks
    assert match_keys(["case_left"], ["case_right"]) == {}  # shared word, no ID
    assert match_keys(["t1/5_img"], ["t2/5_mask"]) == {}  # different folders never pair


# --- layouts ----------------------------------------------------------------------------------------


def test_nested_folders_pair_by_relative_path_and_stem(tmp_path: Path) -> None:
    for tile in ("tile_1", "tile_2"):
        for i in (1, 2):
            png(tmp_path / "images" / tile / f"part_{i}.jpg")
            png(tmp_path / "masks" / tile / f"part_{i}.png")
    (tmp_path / "masks" / "notes.txt").write_text("ignored")
    result = discover(DataConfig(root=str(tmp_path), group_by="folder"))
    assert result.layout == "folders"
    assert keys(result) == ["tile_1/part_1", "tile_1/part_2", "tile_2/part_1", "tile_2/part_2"]
    s = result.samples[0]
    assert s.image.suffix == ".jpg" and s.mask.suffix == ".png"
    assert s.mask == tmp_path / "masks" / "tile_1" / "part_1.png"
    assert [x.group for x in result.samples] == ["tile_1", "tile_1", "tile_2", "tile_2"]
    assert s.folder == "tile_1"


def test_alternative_folder_names_and_unmatched_files_are_reported(tmp_path: Path) -> None:
    png(tmp_path / "image" / "a.png")
    png(tmp_path / "image" / "lonely.png")
    png(tmp_path / "gt" / "a.png")
    png(tmp_path / "gt" / "orphan.png")
    result = discover(DataConfig(root=str(tmp_path)))
    assert keys(result) == ["a"]
    assert [p.name for p in result.unmatched_images] == ["lonely.png"]
    assert [p.name for p in result.unmatched_masks] == ["orphan.png"]


def test_flat_images_with_a_masks_subfolder(tmp_path: Path) -> None:
    png(tmp_path / "a.png")
    png(tmp_path / "b.png")
    png(tmp_path / "masks" / "a.png")
    result = discover(DataConfig(root=str(tmp_path)))
    assert result.layout == "flat" and keys(result) == ["a"]  # masks/a.png is not an image
    assert [p.name for p in result.unmatched_images] == ["b.png"] and not result.unmatched_masks


def test_explicit_dirs_with_drive_style_names_and_roi(tmp_path: Path) -> None:
    for i in (21, 22):
        png(tmp_path / "training" / "images" / f"{i}_training.tif")
        png(tmp_path / "training" / "1st_manual" / f"{i}_manual1.gif")
        png(tmp_path / "training" / "mask" / f"{i}_training_mask.gif")
    cfg = DataConfig(root=str(tmp_path), image_dir="training/images", mask_dir="training/1st_manual",
                     roi_dir="training/mask")  # fmt: skip
    result = discover(cfg)
    assert result.layout == "explicit"
    assert [(s.key, s.mask.name, s.roi.name) for s in result.samples] == [
        ("21_training", "21_manual1.gif", "21_training_mask.gif"),
        ("22_training", "22_manual1.gif", "22_training_mask.gif"),
    ]


def test_nnunet_channels_become_one_sample(tmp_path: Path) -> None:
    for case in ("c1", "c2"):
        for ch in (0, 1):
            png(tmp_path / "imagesTr" / f"{case}_{ch:04d}.png")
        png(tmp_path / "labelsTr" / f"{case}.png")
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "x": 1}}))
    result = discover(DataConfig(root=str(tmp_path)))
    assert result.layout == "nnunet" and keys(result) == ["c1", "c2"]
    assert [p.name for p in result.samples[0].image] == ["c1_0000.png", "c1_0001.png"]
    assert result.dataset_json == {"labels": {"background": 0, "x": 1}}
    loaded = load_sample(result.samples[0], DataConfig(root=str(tmp_path)))
    assert loaded.image.shape == (2, 8, 8) and loaded.image.dtype == np.float32


def test_numbered_series_is_not_mistaken_for_channels(tmp_path: Path) -> None:
    for i in range(3):
        png(tmp_path / "images" / f"slice_{i:04d}.png")
        png(tmp_path / "masks" / f"slice_{i:04d}.png")
    assert keys(discover(DataConfig(root=str(tmp_path)))) == ["slice_0000", "slice_0001", "slice_0002"]


def test_csv_and_json_lists_resolve_relative_paths_and_report_missing(tmp_path: Path) -> None:
    png(tmp_path / "data" / "i1.png")
    png(tmp_path / "data" / "m1.png")
    png(tmp_path / "data" / "i2.png")
    (tmp_path / "list.csv").write_text(
        "image,mask,group\ndata/i1.png,data/m1.png,p1\ndata/i2.png,data/gone.png,p2\n"
    )
    result = discover(DataConfig(root=str(tmp_path / "list.csv")))
    assert result.layout == "list" and keys(result) == ["data/i1"]
    assert result.samples[0].group == "p1" and result.samples[0].mask == tmp_path / "data" / "m1.png"
    assert result.missing_files == [tmp_path / "data" / "gone.png"]
    (tmp_path / "list.json").write_text(json.dumps([{"image": "data/i2.png", "mask": "data/m1.png"}]))
    result = discover(DataConfig(root=str(tmp_path / "list.json"), group_by=r"(i\d)"))
    assert keys(result) == ["data/i2"] and result.samples[0].group == "i2"


def test_multilabel_one_folder_per_class(tmp_path: Path) -> None:
    png(tmp_path / "images" / "a.png")
    png(tmp_path / "images" / "b.png")
    png(tmp_path / "masks" / "cell" / "a.png", np.full((8, 8), 255, np.uint8))
    png(tmp_path / "masks" / "nucleus" / "b.png")
    cfg = DataConfig(root=str(tmp_path), task="multilabel", classes=["cell", "nucleus"])
    result = discover(cfg)
    a, b = result.samples
    assert a.mask == [tmp_path / "masks" / "cell" / "a.png", None]
    assert b.mask == [None, tmp_path / "masks" / "nucleus" / "b.png"]
    loaded = load_sample(a, cfg)
    assert loaded.mask.shape == (2, 8, 8) and loaded.mask[0].all() and not loaded.mask[1].any()


def test_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="is empty"):
        discover(DataConfig(root=str(tmp_path / "empty")))
    with pytest.raises(FileNotFoundError, match="dataset not found"):
        discover(DataConfig(root=str(tmp_path / "nope")))
    (tmp_path / "odd" / "training").mkdir(parents=True)
    with pytest.raises(ValueError, match="sub-folders are training. Pass --image-dir and --mask-dir"):
        discover(DataConfig(root=str(tmp_path / "odd")))
    (tmp_path / "noimg" / "images").mkdir(parents=True)
    with pytest.raises(ValueError, match="no image files"):
        discover(DataConfig(root=str(tmp_path / "noimg")))
    png(tmp_path / "dup" / "images" / "x.png")
    png(tmp_path / "dup" / "images" / "x.jpg")
    with pytest.raises(ValueError, match="two files share the name 'x'"):
        discover(DataConfig(root=str(tmp_path / "dup")))
    with pytest.raises(ValueError, match="needs one capture group"):
        discover(DataConfig(root=str(tmp_path / "dup"), group_by="x+"))


def test_size_mismatch_names_both_files_and_sizes(tmp_path: Path) -> None:
    png(tmp_path / "images" / "a.png", np.zeros((8, 6), np.uint8))
    png(tmp_path / "masks" / "a.png", np.zeros((8, 8), np.uint8))
    sample = discover(DataConfig(root=str(tmp_path))).samples[0]
    with pytest.raises(ValueError, match=r"image .*images/a\.png is 8x6 but mask .*masks/a\.png is 8x8"):
        load_sample(sample, DataConfig(root=str(tmp_path)))


# --- the real datasets ------------------------------------------------------------------------------


def test_isbi_membrane_is_foreground_with_a_value_map(datasets: Path) -> None:
    root = datasets / "isbi2012_em_membrane"
    cfg = DataConfig(root=str(root), value_map={0: 1, 255: 0})
    result = discover(cfg)
    assert len(result.samples) == 30 and not result.unmatched_images and not result.unmatched_masks
    loaded = load_samples(result.samples[:10], cfg)
    assert loaded[0].image.shape == (1, 512, 512) and loaded[0].image.dtype == np.float32
    expected = np.mean([pixels(root / "masks" / f"{s.key}.png") == 0 for s in result.samples[:10]])
    fp = fingerprint(loaded, cfg)
    assert fp.foreground_fraction == pytest.approx(expected, abs=1e-12)
    assert 0.18 < fp.foreground_fraction < 0.26  # SOURCE.md: ~78% of pixels are cell interior
    assert fp.georeferenced is False
    np.testing.assert_array_equal(loaded[0].image[0], pixels(root / "images" / "0.png"))


def test_drive_vessels_inside_the_field_of_view(datasets: Path) -> None:
    root = datasets / "drive_retina_vessels"
    cfg = DataConfig(root=str(root), image_dir="training/images", mask_dir="training/1st_manual",
                     roi_dir="training/mask", mask_threshold=128)  # fmt: skip
    result = discover(cfg)
    assert len(result.samples) == 20 and not result.images_without_roi and not result.unmatched_masks
    loaded = load_samples(result.samples[:6], cfg)
    assert loaded[0].image.shape == (3, 584, 565)
    vessel = fov = outside = 0
    for s in result.samples[:6]:
        manual = pixels(s.mask) >= 128
        inside = pixels(s.roi) > 0
        vessel, fov, outside = vessel + (manual & inside).sum(), fov + inside.sum(), outside + (~inside).sum()
    fp = fingerprint(loaded, cfg)
    assert fp.foreground_fraction == pytest.approx(vessel / fov, abs=1e-12)
    assert 0.10 < fp.foreground_fraction < 0.15
    assert sum((x.mask == 255).sum() for x in loaded) == outside


def _source_colour_table(source_md: Path) -> dict[str, list[int]]:
    """The class colour table as documented in the dataset's SOURCE.md (``| name | #hex | (r, g, b) |`` rows)."""
    table = {}
    for line in source_md.read_text().splitlines():
        m = re.match(r"\s*\|\s*([A-Za-z][^|]*?)\s*\|\s*#([0-9A-Fa-f]{6})\s*\|", line)
        if m:
            table[m.group(1).split(" (")[0]] = [int(m.group(2)[i : i + 2], 16) for i in (0, 2, 4)]
    return table


def test_dubai_colour_table_from_source_md(datasets: Path) -> None:
    root = datasets / "dubai_aerial_landcover"
    table = _source_colour_table(root / "SOURCE.md")
    assert list(table) == ["Building", "Land", "Road", "Vegetation", "Water", "Unlabeled"]
    cfg = DataConfig(root=str(root), colour_table=table, ignore_colours=[[0, 0, 0]], group_by="folder")
    result = discover(cfg)
    assert len(result.samples) == 72 and {s.group for s in result.samples} == {
        f"tile_{i}" for i in range(1, 9)
    }
    subset = [s for s in result.samples if s.group in ("tile_1", "tile_3")]  # small tiles; 7-8 are big
    counts = np.zeros(len(table), dtype=np.int64)
    for s in subset:  # independent count straight from the PNGs
        rgb = pixels(s.mask, "RGB")
        for i, colour in enumerate(table.values()):
            counts[i] += np.all(rgb == colour, axis=-1).sum()
    fp = fingerprint(subset, cfg)
    got = np.array([fp.class_pixels[name] for name in table])
    np.testing.assert_array_equal(got, counts)
    assert fp.classes == list(table)


@pytest.mark.slow
def test_dubai_class_shares_over_all_tiles(datasets: Path) -> None:
    root = datasets / "dubai_aerial_landcover"
    table = _source_colour_table(root / "SOURCE.md")
    cfg = DataConfig(root=str(root), colour_table=table, ignore_colours=[[0, 0, 0]])
    fp = fingerprint(discover(cfg).samples, cfg)
    shares = fp.class_frequencies
    assert shares["Land"] == pytest.approx(0.52, abs=0.01) and shares["Water"] == pytest.approx(
        0.14, abs=0.01
    )
    assert shares["Building"] == pytest.approx(0.13, abs=0.01) and 0.0 < fp.ignore_fraction < 0.01


def test_magnetic_tiles_threshold_and_stratify_by_class_folder(datasets: Path) -> None:
    root = datasets / "magnetic_tile_defects"
    cfg = DataConfig(root=str(root), mask_threshold=128)
    result = discover(cfg)
    assert len(result.samples) == 492
    by_folder = {f: sum(s.folder == f for s in result.samples) for f in {s.folder for s in result.samples}}
    assert by_folder == {"Blowhole": 115, "Break": 85, "Crack": 57, "Fray": 32, "Uneven": 103, "Free": 100}
    subset = [s for s in result.samples if s.folder in ("Crack", "Fray")]
    fg = sum((pixels(s.mask) >= 128).sum() for s in subset)
    total = sum(pixels(s.mask).size for s in subset)
    fp = fingerprint(subset, cfg)
    assert fp.foreground_fraction == pytest.approx(fg / total, abs=1e-12)
    assert fp.class_presence["foreground"] == 1.0  # every defect image has a defect
    split = stratified_split([s.key for s in result.samples], [s.folder for s in result.samples],
                             val_fraction=0.2, seed=0)  # fmt: skip
    val_folders = {k.split("/")[0] for k in split.val}
    assert val_folders == set(by_folder) and len(split.val) == pytest.approx(98, abs=3)


def test_hippocampus_nifti_three_classes(datasets: Path) -> None:
    root = datasets / "msd_task04_hippocampus"
    cfg = DataConfig(root=str(root), classes=["background", "anterior", "posterior"])
    result = discover(cfg)
    assert len(result.samples) == 260
    samples = [
        s for s in result.samples if s.key in ("hippocampus_003", "hippocampus_001", "hippocampus_243")
    ]
    loaded = load_samples(samples, cfg)
    for s, x in zip(samples, loaded, strict=True):
        label = np.asarray(nib.load(s.mask).dataobj)
        assert x.image.ndim == 4 and x.image.shape[1:] == label.shape == x.mask.shape
        for c in (1, 2):
            assert (x.mask == c).sum() == (label == c).sum() > 0
    fp = fingerprint(loaded, cfg)
    assert fp.spatial_dims == [3] and fp.classes == ["background", "anterior", "posterior"]
    assert 0.03 < fp.foreground_fraction < 0.08 and fp.spacing == [1.0, 1.0, 1.0]


def test_georeferenced_rasters_are_planned_as_aerial_scenes(tmp_path: Path) -> None:
    """A folder of GeoTIFFs is fingerprinted as georeferenced, and the planner gives it the aerial rules."""
    rasterio = pytest.importorskip("rasterio")
    from unetkit.train.plan import make_plan

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        profile = {"driver": "GTiff", "height": 40, "width": 48, "count": 3, "dtype": "uint8", "crs": "EPSG:32640",
                   "transform": rasterio.Affine(0.5, 0.0, 500000.0 + 24 * i, 0.0, -0.5, 2790000.0)}  # fmt: skip
        with rasterio.open(tmp_path / "images" / f"s{i}.tif", "w", **profile) as ds:
            ds.write(rng.integers(0, 256, (3, 40, 48), dtype=np.uint8))
        png(tmp_path / "masks" / f"s{i}.png", (rng.random((40, 48)) > 0.7).astype(np.uint8))
    cfg = DataConfig(root=str(tmp_path))
    fp = fingerprint(discover(cfg).samples, cfg)
    assert fp.georeferenced is True
    plan = make_plan(cfg, fp, pretrained=False)
    assert plan.train.augmentation == "aerial"  # a scene has no up, so no RGB-photo rules
    assert plan.data.normalization == "dataset" and len(plan.data.intensity_mean) == 3
