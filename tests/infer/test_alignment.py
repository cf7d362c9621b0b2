"""Sub-pixel alignment: the shift against scipy, the search on known offsets, the predictor and training step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _run_factory import make_run
from scipy import ndimage

from unetkit.config import Plan, TrainConfig
from unetkit.data.normalize import normalize
from unetkit.infer.predictor import Predictor
from unetkit.runtime.alignment import estimate_shift, shift_probabilities, shift_tiles
from unetkit.runtime.examples import Example
from unetkit.train.align import align_predictions


@pytest.mark.parametrize("shift", [(0.5, -0.25), (-1.0, 0.75), (1.25, -1.5), (0.0, 0.3), (2.0, -3.0)])
def test_shift_tiles_equals_scipy_linear_shift_with_nearest_edges(shift: tuple[float, float]) -> None:
    x = np.random.default_rng(0).random((2, 3, 17, 19)).astype(np.float32)
    out = shift_tiles(torch.from_numpy(x), shift).numpy()
    expected = np.stack([[ndimage.shift(x[b, k], shift, order=1, mode="nearest") for k in range(3)] for b in range(2)])
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_shift_tiles_in_3d_and_the_trivial_cases() -> None:
    x = np.random.default_rng(1).random((1, 2, 5, 6, 7)).astype(np.float32)
    out = shift_tiles(torch.from_numpy(x), (0.25, 0.0, -0.5)).numpy()
    expected = np.stack([ndimage.shift(x[0, k], (0.25, 0.0, -0.5), order=1, mode="nearest") for k in range(2)])
    np.testing.assert_allclose(out[0], expected, atol=1e-6)
    tiles = torch.from_numpy(x)
    assert shift_tiles(tiles, []) is tiles and shift_tiles(tiles, [0.0, 0.0, 0.0]) is tiles
    # A whole-pixel shift moves values exactly: out[i] = in[i - 1], the first row repeated.
    row = torch.arange(4.0).reshape(1, 1, 4, 1)
    assert shift_tiles(row, [1.0, 0.0]).flatten().tolist() == [0.0, 0.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="one value per spatial axis"):
        shift_tiles(tiles, [0.5, 0.5])


def membrane_sample(offset: float) -> tuple[np.ndarray, np.ndarray]:
    """Thin horizontal lines: labels 3 px wide at rows 10-12, 30-32 ...; 'probabilities' of the same lines
    drawn ``offset`` px lower and blurred (as a network trained with flips sees labels drawn off-centre)."""
    target = np.zeros((64, 48), np.int64)
    for top in range(10, 64, 20):
        target[top : top + 3] = 1
    fg = ndimage.gaussian_filter(ndimage.shift(target.astype(float), (offset, 0.0), order=1), (1.0, 0.0))
    fg = np.clip(fg * 1.2, 0.0, 1.0)
    return np.stack([1.0 - fg, fg]).astype(np.float32), target


def dice(probs: np.ndarray, target: np.ndarray) -> float:
    pred = probs.argmax(axis=0) == 1
    return float(2 * (pred & (target == 1)).sum() / (pred.sum() + (target == 1).sum()))


def test_estimate_shift_undoes_a_known_half_pixel_offset() -> None:
    samples = [membrane_sample(0.5), membrane_sample(0.5)]
    shift, before, after = estimate_shift(samples, dice)
    assert shift == [-0.5, 0.0]
    assert after > before + 0.1  # hand check: 3-px lines 0.5 px off lose a sixth of their overlap or more
    assert dice(shift_probabilities(samples[0][0], shift), samples[0][1]) == pytest.approx(after)


def test_estimate_shift_keeps_aligned_predictions_unshifted() -> None:
    samples = [membrane_sample(0.0)]
    shift, before, after = estimate_shift(samples, dice)
    assert shift == [] and before == after == pytest.approx(1.0)
    assert estimate_shift([], dice)[0] == []
    # A gain below the margin is not taken: with a huge margin, even the real offset is left alone.
    assert estimate_shift([membrane_sample(0.5)], dice, min_gain=0.9)[0] == []


def test_predictor_applies_the_plan_shift_to_its_probabilities(tmp_path: Path) -> None:
    image = np.random.default_rng(2).normal(size=(1, 96, 80)).astype(np.float32)
    plain = Predictor.from_run(make_run(tmp_path / "a", tile=[96, 80]), fast=False)
    moved = Predictor.from_run(make_run(tmp_path / "b", tile=[96, 80], shift=[-0.5, 0.25]), fast=False)
    assert moved.infer.shift == [-0.5, 0.25]
    expected = shift_probabilities(plain.probabilities(image)[0], [-0.5, 0.25])  # one tile = the whole image
    np.testing.assert_allclose(moved.probabilities(image)[0], expected, atol=1e-6)
    assert np.abs(expected - plain.probabilities(image)[0]).max() > 0.05  # the shift changed something


def test_training_alignment_step_finds_a_one_pixel_label_offset_and_writes_the_plan(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", tile=64)
    plan = Plan.load(run / "plan.yaml")
    plan.train = TrainConfig(patch_size=[64, 64])
    predictor = Predictor.from_run(run, fast=False)
    rng = np.random.default_rng(3)
    val = []
    for i in range(2):
        raw = ndimage.gaussian_filter(rng.normal(size=(1, 64, 64)), (0, 2, 2)).astype(np.float32)
        labels = predictor(raw).labels
        # Labels drawn one pixel lower than the model's own prediction: the step must move predictions down.
        val.append(Example(key=f"v{i}", image=normalize(raw), mask=np.roll(labels, 1, axis=0)))
    assert 0.1 < float(np.mean([v.mask.mean() for v in val])) < 0.9
    shift, before, after = align_predictions(run, val, plan, device=torch.device("cpu"))
    assert shift == [1.0, 0.0] and after > before
    assert Plan.load(run / "plan.yaml").infer.shift == [1.0, 0.0]
    assert plan.infer.shift == []  # the caller's plan (shared by cross-validation folds) is left alone
    # Labels that match the predictions: no shift wins, and a stale one in the file is cleared.
    aligned = [Example(key=v.key, image=v.image, mask=np.roll(v.mask, -1, axis=0)) for v in val]
    assert align_predictions(run, aligned, plan, device=torch.device("cpu"))[0] == []
    assert Plan.load(run / "plan.yaml").infer.shift == []
    plan.train.align = False
    assert align_predictions(run, val, plan, device=torch.device("cpu")) is None
