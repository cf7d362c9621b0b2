"""``unetkit check``: small broken datasets built from real images, each mistake with its message and exit code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unetkit.cli import main
from unetkit.data.checks import check_dataset
from unetkit.data.options import DataConfig


def pixels(path: Path, mode: str | None = None) -> np.ndarray:
    with Image.open(path) as im:
        return np.array(im.convert(mode) if mode else im)


def save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


@pytest.fixture()
def isbi_crops(datasets: Path, tmp_path: Path) -> Path:
    """Three 64x64 crops of real ISBI pairs: images/ + masks/ holding {0, 255}."""
    src = datasets / "isbi2012_em_membrane"
    root = tmp_path / "isbi"
    for i in range(3):
        save(root / "images" / f"{i}.png", pixels(src / "images" / f"{i}.png")[:64, :64])
        save(root / "masks" / f"{i}.png", pixels(src / "masks" / f"{i}.png")[:64, :64])
    return root


def run_check(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["check", *args])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_clean_dataset_passes_and_reports_counts(
    isbi_crops: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run_check([str(isbi_crops), "--value-map", "0:1,255:0"], capsys)
    assert code == 0, out
    assert "samples: 3 paired (3 checked)" in out and "result: 0 error(s), 0 warning(s)" in out
    masks = np.stack([pixels(isbi_crops / "masks" / f"{i}.png") for i in range(3)])
    membrane = 100 * (masks == 0).mean()
    assert f"foreground {membrane:.1f}%" in out
    assert f"0: {(masks == 0).sum()}, 255: {(masks == 255).sum()}" in out


def test_0_255_masks_without_threshold(isbi_crops: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_check([str(isbi_crops)], capsys)
    assert code == 1
    assert "ERROR   [mask_0_255] masks hold {0,255}: pass --mask-threshold 128 or --value-map 255:1" in out


def test_rgb_masks_without_colour_table(
    datasets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = datasets / "dubai_aerial_landcover"
    root = tmp_path / "dubai"
    for name in ("image_part_001", "image_part_002"):
        save(root / "images" / f"{name}.png", pixels(src / "images" / "tile_1" / f"{name}.jpg")[:96, :96])
        save(
            root / "masks" / f"{name}.png", pixels(src / "masks" / "tile_1" / f"{name}.png", "RGB")[:96, :96]
        )
    colours = {
        tuple(c) for i in (1, 2) for c in pixels(root / "masks" / f"image_part_00{i}.png").reshape(-1, 3)
    }
    code, out = run_check([str(root)], capsys)
    assert code == 1
    assert (
        f"[rgb_mask_no_table] masks are RGB with {len(colours)} colours: give a colour table (--colour-table)"
        in out
    )
    table = ",".join(f"c{i}=#{r:02X}{g:02X}{b:02X}" for i, (r, g, b) in enumerate(sorted(colours)))
    code, out = run_check([str(root), "--colour-table", table], capsys)
    assert code == 0, out


def test_unknown_colour_listed_and_fixed_by_ignore_colour(
    datasets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = datasets / "dubai_aerial_landcover"
    root = tmp_path / "dubai"
    mask = pixels(src / "masks" / "tile_1" / "image_part_001.png", "RGB")[:64, :64].copy()
    mask[:4, :5] = (0, 0, 0)  # 20 black pixels
    save(root / "images" / "a.png", pixels(src / "images" / "tile_1" / "image_part_001.jpg")[:64, :64])
    save(root / "masks" / "a.png", mask)
    known = {tuple(c) for c in mask.reshape(-1, 3)} - {(0, 0, 0)}
    table = ",".join(f"c{i}=#{r:02X}{g:02X}{b:02X}" for i, (r, g, b) in enumerate(sorted(known)))
    code, out = run_check([str(root), "--colour-table", table], capsys)
    assert code == 1
    assert "[unknown_colours] 1 mask(s) hold colours that are not in the colour table: #000000 (20 px)" in out
    code, out = run_check([str(root), "--colour-table", table, "--ignore-colour", "#000000"], capsys)
    assert code == 0, out


def test_size_mismatch(isbi_crops: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save(isbi_crops / "masks" / "1.png", pixels(isbi_crops / "masks" / "1.png")[:60, :64])
    code, out = run_check([str(isbi_crops), "--mask-threshold", "128"], capsys)
    assert code == 1
    assert "[size_mismatch] 1 image/mask pair(s) differ in size" in out
    assert "image 1.png is 64x64, mask 1.png is 60x64" in out


def test_unmatched_files_are_warnings_naming_them(
    isbi_crops: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(isbi_crops / "images" / "0.png", isbi_crops / "images" / "extra.png")
    shutil.copy(isbi_crops / "masks" / "0.png", isbi_crops / "masks" / "stray.png")
    code, out = run_check([str(isbi_crops), "--mask-threshold", "128"], capsys)
    assert code == 0, out
    assert "WARNING [unmatched_images] 1 image(s) have no mask and will not be used: extra.png." in out
    assert "WARNING [unmatched_masks] 1 mask(s) have no image and will not be used: stray.png." in out


def test_truncated_image(isbi_crops: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = isbi_crops / "images" / "2.png"
    path.write_bytes(path.read_bytes()[:300])
    code, out = run_check([str(isbi_crops), "--mask-threshold", "128"], capsys)
    assert code == 1
    assert (
        "[unreadable_image] 1 image(s) cannot be read (truncated or corrupt): re-export or remove them" in out
    )
    assert "2.png" in out


def test_empty_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_check([str(tmp_path)], capsys)
    assert code == 1
    assert f"ERROR   [discovery] {tmp_path} is empty: no image files and no sub-folders" in out


def test_values_outside_declared_classes(isbi_crops: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for i in range(3):
        grey = pixels(isbi_crops / "masks" / f"{i}.png")
        save(
            isbi_crops / "masks" / f"{i}.png", (grey == 0).astype(np.uint8) * (1 + (i == 2))
        )  # 2.png holds 2
    code, out = run_check([str(isbi_crops), "--classes", "background,membrane"], capsys)
    assert code == 1
    assert "[values_outside_classes] 1 mask(s) hold values outside the declared classes" in out
    assert "2.png: mask values {2} are outside the declared classes (0..1" in out
    code, out = run_check([str(isbi_crops), "--classes", "background,membrane,other"], capsys)
    assert code == 0, out


def test_soft_edged_masks_suggest_a_threshold(
    datasets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = datasets / "magnetic_tile_defects"
    root = tmp_path / "mt"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for name in sorted(p.stem for p in (src / "masks" / "Crack").glob("*.png"))[:4]:
        shutil.copy(src / "images" / "Crack" / f"{name}.jpg", root / "images")
        shutil.copy(src / "masks" / "Crack" / f"{name}.png", root / "masks")
    code, out = run_check([str(root)], capsys)
    assert code == 1
    assert "[soft_mask] masks are 0/255 with soft edges" in out and "pass --mask-threshold 128" in out
    code, out = run_check([str(root), "--mask-threshold", "128"], capsys)
    assert code == 0, out


def test_json_report_and_library_api(isbi_crops: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_check([str(isbi_crops), "--json"], capsys)
    report = json.loads(out)
    assert code == 1 and report["ok"] is False and report["errors"] == 1
    assert report["findings"][0]["code"] == "mask_0_255" and report["findings"][0]["severity"] == "error"
    assert report["summary"]["num_samples"] == 3
    bad = check_dataset(DataConfig(root=str(isbi_crops)))
    assert bad.has_errors and bad.to_text(errors_only=True) == (
        "ERROR   [mask_0_255] masks hold {0,255}: pass --mask-threshold 128 or --value-map 255:1"
    )
    # Wrongly encoded masks: the fingerprint keeps its sizes but shows no class statistics.
    assert bad.fingerprint is not None and bad.fingerprint.class_pixels == {} and bad.fingerprint.classes == []
    assert "class_pixels" not in report["summary"]["fingerprint"] and report["summary"]["fingerprint"]["num_samples"] == 3
    good = check_dataset(DataConfig(root=str(isbi_crops), value_map={0: 1, 255: 0}))
    assert good.ok and not good.has_errors
    fp = good.fingerprint
    assert fp is not None and fp.num_samples == 3 and fp.sizes.median == [64, 64] and fp.channels == [1]
    assert good.summary["fingerprint"] == fp.to_dict()  # what --json prints


def test_real_drive_with_roi_passes(datasets: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = datasets / "drive_retina_vessels"
    args = [str(root), "--image-dir", "training/images", "--mask-dir", "training/1st_manual",
            "--roi-dir", "training/mask", "--max-samples", "3"]  # fmt: skip
    code, out = run_check(args, capsys)
    assert code == 1 and "[mask_0_255]" in out
    code, out = run_check([*args, "--mask-threshold", "128"], capsys)
    assert code == 0, out
    assert "samples: 20 paired (3 checked)" in out
