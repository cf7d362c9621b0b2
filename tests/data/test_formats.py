"""The format registry (unetkit.data.io.FORMATS): suffix -> format for reading and writing, first bytes -> format
for telling a user what a misnamed file really is; on real files of every kind in ../shared/datasets."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from unetkit.data import io, readers_image


def _real_files(datasets: Path) -> dict[str, Path]:
    return {
        "PNG": datasets / "isbi2012_em_membrane" / "images" / "0.png",
        "TIFF": datasets / "drive_retina_vessels" / "training" / "images" / "21_training.tif",
        "GIF": datasets / "drive_retina_vessels" / "training" / "1st_manual" / "21_manual1.gif",
        "JPEG": datasets / "dubai_aerial_landcover" / "images" / "tile_1" / "image_part_001.jpg",
        "NIfTI": datasets / "msd_task04_hippocampus" / "images" / "hippocampus_001.nii.gz",
    }


def test_suffixes_pick_one_format_each() -> None:
    assert io.SUPPORTED_SUFFIXES == (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".nii", ".nii.gz")
    assert io.WRITABLE_SUFFIXES == (".png", ".tif", ".tiff", ".nii", ".nii.gz")
    assert io.format_for("a/b/scan.NII.GZ").name == "NIfTI" and io.format_for("x.JPEG").name == "JPEG"
    with pytest.raises(ValueError, match=r"notes.txt: unsupported image type '.txt'; supported: .png, .jpg"):
        io.format_for("notes.txt")
    with pytest.raises(ValueError, match=r"cannot write '.jpg'; writable: .png, .tif, .tiff, .nii, .nii.gz"):
        io.write_image("out.jpg", np.zeros((1, 4, 4), np.uint8))


def test_first_bytes_name_the_format_of_real_files(datasets: Path, tmp_path: Path) -> None:
    files = _real_files(datasets)
    for name, path in files.items():
        assert io.sniff_format(path).name == name, path  # type: ignore[union-attr]
    # An uncompressed NIfTI-1 file: "n+1" at byte 344.
    volume = nib.load(str(files["NIfTI"]))
    plain = tmp_path / "case.nii"
    nib.save(nib.Nifti1Image(np.asarray(volume.dataobj), volume.affine), str(plain))
    assert io.sniff_format(plain).name == "NIfTI"  # type: ignore[union-attr]
    (tmp_path / "notes.png").write_bytes(b"hello\n")
    assert io.sniff_format(tmp_path / "notes.png") is None and io.sniff_format(tmp_path / "missing.png") is None


def test_reading_goes_through_the_registry(datasets: Path) -> None:
    files = _real_files(datasets)
    png = io.read_image(files["PNG"])
    np.testing.assert_array_equal(png.array, readers_image.read_pillow(files["PNG"])[0])
    assert io.image_shape(files["TIFF"]) == io.read_image(files["TIFF"]).array.shape == (3, 584, 565)
    assert io.image_shape(files["NIfTI"]) == io.read_image(files["NIfTI"]).array.shape


def test_a_misnamed_file_says_what_it_is(datasets: Path, tmp_path: Path) -> None:
    misnamed = tmp_path / "scan.nii.gz"
    shutil.copy(_real_files(datasets)["PNG"], misnamed)
    with pytest.raises(ValueError) as caught:
        io.read_image(misnamed)
    message = str(caught.value)
    assert message.startswith(f"{misnamed}: unreadable") and "\n" not in message
    assert message.endswith("its first bytes are those of a PNG file, not NIfTI: is the suffix wrong?")
    # A file that is simply broken gets no guess.
    (tmp_path / "notes.png").write_bytes(b"hello\n")
    with pytest.raises(ValueError) as caught:
        io.read_image(tmp_path / "notes.png")
    assert "first bytes" not in str(caught.value)
