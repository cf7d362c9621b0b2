"""The typed dataset fingerprint: its dict form (what ``unetkit check --json`` prints) and its defaults."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from unetkit.data.dataset import LoadedSample, load_samples
from unetkit.data.discovery import discover
from unetkit.data.fingerprint import DataFingerprint, IntensityStats, SizeSpread, fingerprint
from unetkit.data.options import DataConfig
from unetkit.train.plan import ASSUMED_FOREGROUND_FRACTION, make_plan

HIPPOCAMPUS = ("hippocampus_001", "hippocampus_003", "hippocampus_243")


def _hippocampus(datasets: Path) -> tuple[list[LoadedSample], DataConfig]:
    cfg = DataConfig(root=str(datasets / "msd_task04_hippocampus"), image_dir="images", mask_dir="labels",
                     classes=["background", "anterior", "posterior"])  # fmt: skip
    samples = [s for s in discover(cfg).samples if s.key in HIPPOCAMPUS]
    return load_samples(samples, cfg), cfg


def test_a_real_fingerprint_round_trips_through_its_dict_form(datasets: Path) -> None:
    loaded, cfg = _hippocampus(datasets)
    fp = fingerprint(loaded, cfg)
    shapes = np.array([nib.load(s.meta["image_files"][0]).shape[:3] for s in loaded])
    assert fp.sizes == SizeSpread(min=shapes.min(0).tolist(), median=np.median(shapes, 0).astype(int).tolist(),
                                  max=shapes.max(0).tolist())  # fmt: skip
    assert fp.num_labelled == 3 and fp.spacing == [1.0, 1.0, 1.0] and fp.foreground_fraction is not None
    raw = fp.to_dict()
    # The accumulator's keys in its order; has_roi is the planner's and stays out while False.
    assert list(raw) == [f.name for f in dataclasses.fields(DataFingerprint)][:-1]
    assert raw["spatial_dims"] == 3 and raw["channels"] == [1]  # one dimensionality is written as a number
    assert raw["sizes"] == {"min": fp.sizes.min, "median": fp.sizes.median, "max": fp.sizes.max}
    text = json.dumps(raw)
    back = DataFingerprint.from_dict(json.loads(text))
    assert back == fp and json.dumps(back.to_dict()) == text


def test_unlabelled_images_leave_the_label_statistics_out(datasets: Path) -> None:
    loaded, cfg = _hippocampus(datasets)
    fp = fingerprint([dataclasses.replace(s, mask=None) for s in loaded], cfg)
    assert fp.num_labelled == 0 and fp.class_pixels == {} and fp.intensity_foreground is None
    assert (fp.class_presence, fp.foreground_fraction, fp.ignore_fraction) == (None, None, None)
    raw = fp.to_dict()
    assert raw["classes"] == ["background", "anterior", "posterior"] and raw["class_pixels"] == {}
    assert not {"class_presence", "foreground_fraction", "ignore_fraction", "has_roi"} & set(raw)
    assert DataFingerprint.from_dict(raw) == fp


def test_a_missing_key_gets_its_one_default() -> None:
    fp = DataFingerprint.from_dict({"spatial_dims": 2, "channels": 3, "sizes": {"median": [512, 512]},
                                    "intensity": {"mean": [0.5], "std": [0.2]}})  # fmt: skip
    assert fp.spatial_dims == [2] and fp.channels == [3]  # a number is the one value seen
    assert fp.foreground_fraction is None and fp.spacing is None and fp.georeferenced is False
    assert fp.has_roi is False and fp.num_samples == 0 and fp.classes == [] and fp.sizes.min == []
    assert fp.intensity == IntensityStats(mean=[0.5], std=[0.2])
    assert fp.to_dict()["sizes"] == {"median": [512, 512]}  # nothing invented on the way out
    assert "foreground_fraction" not in fp.to_dict() and DataFingerprint.from_dict({"has_roi": True}).to_dict()["has_roi"]
    # The planner's assumption for an unknown foreground share is the usual sampling, not the rare-foreground one.
    assert ASSUMED_FOREGROUND_FRACTION == 0.1
    assert make_plan(DataConfig(), fp, pretrained=False).train.foreground_fraction == 0.33
    rare = dataclasses.replace(fp, foreground_fraction=0.02)
    assert make_plan(DataConfig(), rare, pretrained=False).train.foreground_fraction == 0.5


def test_unknown_keys_are_refused() -> None:
    with pytest.raises(ValueError, match=r"^fingerprint: unknown key\(s\) size_median \(known: "):
        DataFingerprint.from_dict({"size_median": [512, 512]})
    with pytest.raises(ValueError, match=r"^fingerprint.intensity: unknown key\(s\) average"):
        DataFingerprint.from_dict({"intensity": {"average": [1.0]}})
