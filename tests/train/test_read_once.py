"""Read once: ``unetkit train`` decodes each image and mask a single time; the dataset check's pass gives the
fingerprint the planner uses and the trainer's examples, exactly what separate reads gave before."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import unetkit.data.checks as checks
import unetkit.data.dataset as dataset
from unetkit.cli import main
from unetkit.data.dataset import load_samples
from unetkit.data.discovery import discover
from unetkit.data.options import DataConfig, same_reading
from unetkit.train.plan import plan_from_data
from unetkit.train.setup import checked_samples, load_examples


def _isbi(datasets: Path, folder: Path) -> DataConfig:
    root = datasets / "isbi2012_em_membrane"
    listing = folder / "isbi.csv"
    listing.write_text("\n".join(["image,mask"] + [f"{root}/images/{i}.png,{root}/masks/{i}.png" for i in range(5)]))
    return DataConfig(root=str(listing), value_map={0: 1, 255: 0}, task="binary")


def _drive(datasets: Path, folder: Path) -> DataConfig:  # GIF masks, an ROI per image
    return DataConfig(root=str(datasets / "drive_retina_vessels"), image_dir="training/images",
                      mask_dir="training/1st_manual", roi_dir="training/mask", mask_threshold=128, task="binary")  # fmt: skip


def _dubai(datasets: Path, folder: Path) -> DataConfig:  # RGB masks through a colour table
    src = datasets / "dubai_aerial_landcover"
    colours: set[tuple[int, ...]] = set()
    for name in ("image_part_001", "image_part_002"):
        for sub, suffix in (("images", ".jpg"), ("masks", ".png")):
            array = np.asarray(Image.open(src / sub / "tile_1" / f"{name}{suffix}").convert("RGB"))[:96, :128]
            (folder / "dubai" / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(folder / "dubai" / sub / f"{name}.png")
            if sub == "masks":
                colours |= {tuple(int(v) for v in c) for c in array.reshape(-1, 3)}
    table = {f"c{i}": list(c) for i, c in enumerate(sorted(colours))}
    return DataConfig(root=str(folder / "dubai"), colour_table=table, classes=list(table), background=False)


def _hippocampus(datasets: Path, folder: Path) -> DataConfig:  # NIfTI volumes
    root = datasets / "msd_task04_hippocampus"
    names = sorted(p.name for p in (root / "images").glob("*.nii.gz"))[:3]
    listing = folder / "hippo.json"
    listing.write_text(json.dumps([{"image": str(root / "images" / n), "mask": str(root / "labels" / n)} for n in names]))
    return DataConfig(root=str(listing))


SETS = {"isbi": _isbi, "drive_roi": _drive, "dubai_colour_table": _dubai, "hippocampus_nifti": _hippocampus}


@pytest.mark.parametrize("name", sorted(SETS))
def test_the_checks_pass_loads_what_separate_reads_load(name: str, datasets: Path, tmp_path: Path) -> None:
    data = SETS[name](datasets, tmp_path)
    kept = checked_samples(data)
    reread = load_samples(discover(data).samples, data)
    assert [s.key for s in kept] == [s.key for s in reread] and len(kept) >= 2
    for a, b in zip(kept, reread, strict=True):
        assert a.image.dtype == b.image.dtype == np.float32
        np.testing.assert_array_equal(a.image, b.image)
        assert a.mask is not None and b.mask is not None and a.mask.dtype == b.mask.dtype
        np.testing.assert_array_equal(a.mask, b.mask)
        assert (a.group, a.folder) == (b.group, b.folder)
        assert json.dumps(a.meta, sort_keys=True, default=str) == json.dumps(b.meta, sort_keys=True, default=str)
    # The plan from the kept samples is the plan from reading the files again; so are the training examples.
    plan = plan_from_data(data, device="cpu", time_budget_s=60.0, loaded=kept)
    assert plan.to_dict() == plan_from_data(data, device="cpu", time_budget_s=60.0).to_dict()
    assert same_reading(plan.data, data) and not same_reading(plan.data, dataclasses.replace(data, ignore_index=254))
    examples, groups = load_examples(plan.data, loaded=checked_samples(data))
    again, groups_again = load_examples(plan.data)
    assert groups == groups_again and [e.key for e in examples] == [e.key for e in again]
    for a, b in zip(examples, again, strict=True):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.mask, b.mask)


def test_load_examples_takes_the_samples_out_of_the_list(datasets: Path, tmp_path: Path) -> None:
    data = _isbi(datasets, tmp_path)
    kept = checked_samples(data)
    keys = [s.key for s in kept]
    examples, _ = load_examples(data, loaded=kept)
    assert kept == [] and [e.key for e in examples] == keys  # held once, in the dataset's order


def test_train_decodes_each_file_once(datasets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _isbi(datasets, tmp_path)
    decoded: Counter[str] = Counter()

    def counting(module: object, name: str) -> None:
        inner = getattr(module, name)

        def wrapper(path: Path, *args: object, **kwargs: object) -> object:
            decoded[str(path)] += 1
            return inner(path, *args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    counting(dataset, "read_image_array")  # images (read_sample_image)
    counting(dataset, "read_mask_array")  # masks, as the loader reads them
    counting(checks, "read_mask_array")  # masks, as the check reads them
    args = ["train", data.root, "--out", str(tmp_path / "run"), "--value-map", "0:1,255:0", "--encoder", "plain",
            "--precision", "fp32", "--set", "model.kwargs.width=4", "--set", "model.kwargs.depth=2",
            "--set", "train.patch_size=[64,64]", "--set", "train.batch_size=2", "--set", "train.time_budget_s=null",
            "--set", "train.steps=2", "--set", "train.align=false", "--set", "infer.tile_size=[128,128]"]  # fmt: skip
    assert main(args) == 0
    root = datasets / "isbi2012_em_membrane"
    files = [str(root / sub / f"{i}.png") for i in range(5) for sub in ("images", "masks")]
    assert decoded == Counter(dict.fromkeys(files, 1))
    # With --set data.* changing how masks are read the kept samples are not used: read again, as that says.
    decoded.clear()
    assert main([*args, "--overwrite", "--set", "data.classes=[background,membrane]"]) == 0
    assert decoded == Counter(dict.fromkeys(files, 2))

