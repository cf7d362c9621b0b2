"""Resampling between voxel spacings: shapes, exactness where it must be exact, and the planner's spacing rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from unetkit.data import resample as R
from unetkit.data.fingerprint import DataFingerprint
from unetkit.train.plan import target_spacing


def _hippocampus(datasets: Path, case: str = "hippocampus_001") -> tuple[np.ndarray, np.ndarray]:
    from unetkit.data.nifti import read_nifti

    root = datasets / "msd_task04_hippocampus"
    image, _ = read_nifti(root / "images" / f"{case}.nii.gz")
    label, _ = read_nifti(root / "labels" / f"{case}.nii.gz")
    return image.astype(np.float32), label[0].astype(np.int64)


def test_resampled_shape_keeps_the_extent():
    # 35 x 50 x 36 voxels of 1 mm -> 1 x 1 x 3 mm: 36 / 3 = 12 slices; 0.8 mm: 43.75 -> 44.
    assert R.resampled_shape((35, 50, 36), (1, 1, 1), (1, 1, 3)) == (35, 50, 12)
    assert R.resampled_shape((35, 50, 36), (1, 1, 1), (0.8, 1, 3)) == (44, 50, 12)
    assert R.resampled_shape((2, 2, 2), (1, 1, 1), (10, 10, 10)) == (1, 1, 1)  # never 0 voxels


def test_coarse_axis_and_needs_resampling():
    assert R.coarse_axis((1, 1, 3)) is None  # ratio 3 is not above 3
    assert R.coarse_axis((1, 1, 3.5)) == 2
    assert R.coarse_axis((5, 0.8, 0.8)) == 0  # axis 0 must not read as "no axis"
    assert not R.needs_resampling((1.0, 1.0, 1.0), (1.0, 1.0, 1.0004))
    assert R.needs_resampling((1.0, 1.0, 1.0), (1.0, 1.0, 3.0))
    assert not R.needs_resampling(None, (1.0, 1.0, 3.0)) and not R.needs_resampling((1, 1, 1), None)


def test_at_target_spacing_nothing_is_touched(datasets: Path):
    image, label = _hippocampus(datasets)
    out_image, out_label = R.to_target_spacing(image, label, spacing=(1.0, 1.0, 1.0), target=[1.0, 1.0, 1.0])
    assert out_image is image and out_label is label


def test_real_volume_to_1x1x3_and_labels_stay_labels(datasets: Path):
    image, label = _hippocampus(datasets, "hippocampus_026")  # 36 x 50 x 36: 36 slices make 12 of 3 mm
    coarse_image, coarse_label = R.to_target_spacing(image, label, spacing=(1, 1, 1), target=[1, 1, 3])
    x, y, z = label.shape
    assert coarse_image.shape == (1, x, y, round(z / 3)) and coarse_label.shape == (x, y, round(z / 3))
    assert coarse_image.dtype == np.float32
    assert set(np.unique(coarse_label)) == {0, 1, 2}  # nearest neighbour: no in-between classes
    # Nearest neighbour keeps the middle one of every 3 slices, so a class's volume in mm^3 (1 coarse voxel =
    # 3 fine ones) is what those slices say: exactly 3x their voxel count.
    np.testing.assert_array_equal(coarse_label, label[:, :, 1::3])
    for c in (1, 2):
        fine, coarse = (label == c).sum(), 3 * (coarse_label == c).sum()
        assert abs(coarse - fine) / fine < 0.1, (c, fine, coarse)
    # Edge-aligned grids: coarse slice k covers fine slices 3k..3k+2; the linear through-plane step puts its
    # centre on the middle one, so the coarse volume equals the fine slice 3k+1 (in-plane factors are 1).
    np.testing.assert_allclose(coarse_image[0], image[0][:, :, 1::3], rtol=1e-5, atol=1e-3)


def test_probabilities_back_on_the_input_grid_still_sum_to_one():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 20, 24, 8))
    probs = np.exp(logits) / np.exp(logits).sum(0, keepdims=True)
    back = R.resample_probabilities(probs, (25, 24, 23))
    assert back.shape == (3, 25, 24, 23) and back.dtype == np.float32
    np.testing.assert_allclose(back.sum(0), 1.0, atol=1e-5)
    assert back.min() >= 0.0


def test_planner_spacing_rule():
    iso = DataFingerprint(spacing=[1.0, 1.0, 1.0], spacing_p10=[1.0, 1.0, 1.0], spacing_min=[1.0] * 3,
                          spacing_max=[1.0] * 3)  # fmt: skip
    target, reason = target_spacing(iso)
    assert target == [1.0, 1.0, 1.0] and "already" in reason
    aniso = DataFingerprint(spacing=[0.8, 0.8, 5.0], spacing_p10=[0.7, 0.7, 3.0], spacing_min=[0.6, 0.6, 2.5],
                            spacing_max=[1.0, 1.0, 6.0])  # fmt: skip
    target, reason = target_spacing(aniso)
    assert target == [0.8, 0.8, 3.0] and "anisotropic" in reason
    assert target_spacing(DataFingerprint(spacing=None))[0] is None


def test_hippocampus_plan_needs_no_resampling(datasets: Path):
    from unetkit.data.dataset import load_samples
    from unetkit.data.discovery import discover
    from unetkit.data.fingerprint import fingerprint
    from unetkit.data.options import DataConfig
    from unetkit.train.plan import make_plan

    root = datasets / "msd_task04_hippocampus"
    data = DataConfig(root=str(root), image_dir="images", mask_dir="labels")
    samples = discover(data).samples[:12]
    plan = make_plan(data, fingerprint(load_samples(samples, data), data), pretrained=False)
    assert plan.data.target_spacing == [1.0, 1.0, 1.0]
    assert "nothing is resampled" in plan.data.spacing_reason
    assert plan.infer.tta == "flips"  # mirroring on all three axes


def test_old_plans_load_without_a_target_spacing():
    from unetkit.config import Plan

    plan = Plan.from_dict({"data": {"spatial_dims": 3}})
    assert plan.data.target_spacing is None and plan.data.spacing_reason == ""
    with pytest.raises(ValueError, match="target_spacing"):
        Plan.from_dict({"data": {"target_spacing": "3mm"}})
