"""Boundary F1, view agreement, shift consistency and the bootstrap, against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from unetkit.metrics_boundary import (
    Interval,
    bootstrap_mean,
    boundary_f1,
    boundary_f1_labels,
    describe_difference,
    paired_difference,
    shift_consistency,
    view_agreement,
)


def square(shift: int = 0) -> np.ndarray:
    """A 10x10 square at rows 5..14, columns 5+shift..14+shift of a 30x30 image (boundary: 36 pixels)."""
    mask = np.zeros((30, 30), bool)
    mask[5:15, 5 + shift : 15 + shift] = True
    return mask


# Shifting the square right by s pixels; precision = recall by the mirror symmetry, so F1 = that fraction.
# s=1: only the 9+9 top/bottom pixels that overlap are at distance 0 (18/36); every pixel is within 1.
# s=2: 8+8 at distance 0 (16/36); within 1 add the corners (15,5),(15,14) of the moved top/bottom rows and
#      the ends (7,6),(7,13) of the moved left side next to the true top/bottom rows: 20/36; within 2: all.
# s=3: 7+7 at 0 (14/36); within 1: 8+8 on the rows + 2 side ends = 18/36; within 2: 9+9 on the rows + 4 side
#      pixels (rows 6, 7, 12, 13 of column 8) = 22/36.
CASES = [
    (0, 0, 1.0),
    (1, 0, 18 / 36), (1, 1, 1.0), (1, 2, 1.0),
    (2, 0, 16 / 36), (2, 1, 20 / 36), (2, 2, 1.0),
    (3, 0, 14 / 36), (3, 1, 18 / 36), (3, 2, 22 / 36),
]  # fmt: skip


@pytest.mark.parametrize(("shift", "tolerance", "expected"), CASES)
def test_boundary_f1_of_a_shifted_square(shift: int, tolerance: int, expected: float) -> None:
    assert boundary_f1(square(shift), square(), tolerance=tolerance) == pytest.approx(expected)
    assert boundary_f1(square(), square(shift), tolerance=tolerance) == pytest.approx(expected)


def test_boundary_f1_tolerance_is_in_the_units_of_the_spacing() -> None:
    # Columns 0.5 mm apart: a 2-pixel shift is 1 mm, all within a 1 mm tolerance.
    assert boundary_f1(square(2), square(), tolerance=1.0, spacing=(1.0, 0.5)) == pytest.approx(1.0)
    assert boundary_f1(square(2), square(), tolerance=1.0) == pytest.approx(20 / 36)


def test_boundary_f1_of_empty_masks() -> None:
    empty = np.zeros((30, 30), bool)
    assert boundary_f1(empty, empty) == 1.0
    assert boundary_f1(square(), empty) == 0.0
    assert boundary_f1(empty, square()) == 0.0
    with pytest.raises(ValueError, match="shape"):
        boundary_f1(empty, empty[:10])
    with pytest.raises(ValueError, match="tolerance"):
        boundary_f1(empty, empty, tolerance=-1)


def test_boundary_f1_labels_averages_the_foreground_classes_and_drops_ignored_pixels() -> None:
    target = square().astype(np.int64) + 2 * square(14)  # class 1 the square, class 2 a second square
    pred = square(1).astype(np.int64) + 2 * square(14)
    assert boundary_f1_labels(pred, target, num_classes=3, tolerance=0) == pytest.approx((0.5 + 1.0) / 2)
    # The two columns where the squares differ unlabelled: both masks become the same 10x9 rectangle, F1 = 1.
    ignored = np.where(square(1) ^ square(), 255, square().astype(np.int64))
    assert boundary_f1_labels(square(1).astype(np.int64), ignored, num_classes=2, tolerance=0) == pytest.approx(1.0)


def test_view_agreement_is_one_for_identical_views_and_the_pair_dice_otherwise() -> None:
    a = np.zeros((4, 4), np.int64)
    a[0, :] = 1  # 4 pixels
    b = np.zeros((4, 4), np.int64)
    b[0, :2] = 1
    b[1, :2] = 1  # 4 pixels, 2 of them shared with a: Dice 2 * 2 / 8
    assert view_agreement([a, a, a]) == 1.0
    assert view_agreement([a]) == 1.0
    assert view_agreement([a, b]) == pytest.approx(0.5)
    # three views: pairs (a, a) = 1, (a, b) = 0.5, (a, b) = 0.5
    assert view_agreement([a, a, b]) == pytest.approx(2 / 3)
    assert view_agreement([np.zeros((4, 4)), np.zeros((4, 4))]) == 1.0  # both empty agree
    with pytest.raises(ValueError, match="at least one"):
        view_agreement([])


def test_shift_consistency_of_an_equivariant_and_of_a_position_bound_predictor() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((1, 8, 8))

    def threshold(x: np.ndarray) -> np.ndarray:  # pixel-wise, so it moves with the image
        return (x[0] > 0.5).astype(np.int64)

    def corner(x: np.ndarray) -> np.ndarray:  # always the top-left 4x4, wherever the content is
        out = np.zeros(x.shape[1:], np.int64)
        out[:4, :4] = 1
        return out

    assert shift_consistency(threshold, image, shift=(3, 1)) == 1.0
    # shift (0, 2): the original's corner seen from column 2 on is 4x2 = 8 pixels; the shifted image's
    # prediction is again 4x4 = 16 pixels, 8 of them shared: Dice 2 * 8 / 24.
    assert shift_consistency(corner, image, shift=(0, 2)) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="shift"):
        shift_consistency(threshold, image, shift=(8, 0))


def test_bootstrap_of_a_constant_and_of_a_normal_sample() -> None:
    assert bootstrap_mean([0.7] * 5) == Interval(0.7, pytest.approx(0.7), pytest.approx(0.7), n=5)  # type: ignore[arg-type]
    x = np.random.default_rng(1).normal(0.5, 0.1, size=400)
    ci = bootstrap_mean(x, seed=3)
    half = 1.96 * x.std(ddof=1) / np.sqrt(x.size)  # the normal-theory half width the bootstrap approximates
    assert ci.mean == pytest.approx(x.mean())
    assert ci.low == pytest.approx(x.mean() - half, abs=0.15 * half)
    assert ci.high == pytest.approx(x.mean() + half, abs=0.15 * half)
    assert bootstrap_mean(x, seed=3) == ci  # seeded: the same interval every time
    with pytest.raises(ValueError, match="finite"):
        bootstrap_mean([0.1, float("nan")])


def test_paired_difference_finds_a_constant_shift_and_not_noise() -> None:
    base = np.random.default_rng(2).random(30)
    up = paired_difference(base, base + 0.1)
    assert (up.mean, up.low, up.high) == pytest.approx((0.1, 0.1, 0.1)) and up.significant
    noise = np.tile([0.05, -0.05], 15)  # the differences average exactly 0
    flat = paired_difference(base, base + noise)
    assert flat.mean == pytest.approx(0.0, abs=1e-12) and flat.low < 0 < flat.high and not flat.significant
    assert describe_difference("U-Net++ vs U-Net", "boundary F1", Interval(0.012, -0.004, 0.027, n=30)) == (
        "U-Net++ vs U-Net: boundary F1 +0.012 [-0.004, +0.027], not significant at 95%"
    )
    # Below MIN_IMAGES_FOR_VERDICT images even an interval that excludes 0 gives no verdict.
    few = paired_difference(base[:4], base[:4] + 0.1)
    assert few.low > 0 and not few.significant
    assert describe_difference("b vs a", "Dice", few).endswith("too few images (4) to tell")
    with pytest.raises(ValueError, match="same images"):
        paired_difference([0.1, 0.2], [0.1])
