"""Skeleton recall: the skeleton and the loss checked by hand, on 2D and 3D, with ignored pixels and empty targets."""

from __future__ import annotations

import math

import pytest
import torch

from unetkit import losses as L
from unetkit.losses.skeleton import tubed_skeleton


def _mask(shape: tuple[int, ...]) -> torch.Tensor:
    return torch.zeros(1, 1, *shape)


def test_skeleton_of_a_bar_is_its_middle_row_and_of_a_square_its_centre() -> None:
    bar = _mask((9, 12))
    bar[0, 0, 3:6, 2:10] = 1  # 3 rows high, away from the border
    skeleton = L.morphological_skeleton(bar)[0, 0]
    expected = torch.zeros(9, 12)
    expected[4, 3:9] = 1  # Lantuejoul's skeleton of a bar with a square element: the middle row minus the ends
    torch.testing.assert_close(skeleton, expected)

    square = _mask((9, 9))
    square[0, 0, 2:7, 2:7] = 1  # 5 x 5
    skeleton = L.morphological_skeleton(square)[0, 0]
    expected = torch.zeros(9, 9)
    expected[4, 4] = 1
    torch.testing.assert_close(skeleton, expected)


def test_a_line_cut_by_the_patch_edge_keeps_its_centre_line_to_the_edge() -> None:
    bar = _mask((7, 10))
    bar[0, 0, 2:5, :] = 1  # runs out of the patch on both sides
    skeleton = L.morphological_skeleton(bar)[0, 0]
    assert skeleton[3].tolist() == [1.0] * 10 and skeleton.sum() == 10


def test_skeleton_of_a_3d_tube_is_its_axis() -> None:
    tube = _mask((7, 7, 10))
    tube[0, 0, 2:5, 2:5, :] = 1  # a 3 x 3 tube along the last axis, cut by both ends
    skeleton = L.morphological_skeleton(tube)[0, 0]
    assert skeleton[3, 3].tolist() == [1.0] * 10 and skeleton.sum() == 10


def test_tubed_skeleton_widens_by_one_pixel_inside_the_mask() -> None:
    bar = _mask((9, 12))
    bar[0, 0, 3:6, 2:10] = 1
    tubed = tubed_skeleton(bar)[0, 0]
    expected = torch.zeros(9, 12)
    expected[3:6, 2:10] = 1  # the middle row 3..8 widened by one: the whole bar, never outside it
    torch.testing.assert_close(tubed, expected)


def _logits_for(p_foreground: torch.Tensor) -> torch.Tensor:
    """Two-class logits whose softmax gives foreground probability ``p`` (shape (N, H, W))."""
    return torch.stack([torch.zeros_like(p_foreground), torch.log(p_foreground / (1 - p_foreground))], dim=1)


def test_loss_is_one_minus_the_mean_probability_on_the_tubed_skeleton() -> None:
    target = torch.zeros(1, 9, 12, dtype=torch.long)
    target[0, 3:6, 2:10] = 1  # tubed skeleton = the 24 bar pixels
    p = torch.full((1, 9, 12), 0.3)
    p[0, 3:6, 2:6] = 0.9  # left half of the bar: 12 pixels at 0.9, right half: 12 at 0.3
    p[0, 0, 0] = 0.99  # outside the skeleton: does not count
    loss = L.skeleton_recall_loss(_logits_for(p), target, task="binary")
    assert float(loss) == pytest.approx(1 - (12 * 0.9 + 12 * 0.3) / 24, abs=1e-6)


def test_ignored_pixels_leave_the_skeleton_and_an_empty_target_gives_zero() -> None:
    target = torch.zeros(1, 9, 12, dtype=torch.long)
    target[0, 3:6, 2:10] = 1
    target[0, 3:6, 6:10] = 255  # the right half is unlabelled
    p = torch.full((1, 9, 12), 0.3)
    p[0, 3:6, 2:6] = 0.9
    loss = L.skeleton_recall_loss(_logits_for(p), target, task="binary")
    # The skeleton of the labelled left half (the bar continues under the ignored pixels, so it is computed on
    # the labelled pixels only: columns 2..5, a 3 x 4 block) widened is that block: 12 pixels at 0.9.
    assert float(loss) == pytest.approx(1 - 0.9, abs=1e-6)

    logits = torch.randn(2, 2, 8, 8, requires_grad=True)
    empty = L.skeleton_recall_loss(logits, torch.zeros(2, 8, 8, dtype=torch.long), task="binary")
    empty.backward()
    assert float(empty.detach()) == 0.0 and logits.grad is not None and float(logits.grad.abs().sum()) == 0.0


def test_multiclass_averages_the_classes_present_and_sigmoid_works_too() -> None:
    target = torch.zeros(1, 9, 12, dtype=torch.long)
    target[0, 3:6, 2:10] = 1
    logits = torch.zeros(1, 4, 9, 12)  # softmax: every class 0.25; class 2 and 3 absent from the target
    loss = L.skeleton_recall_loss(logits, target, task="multiclass")
    assert float(loss) == pytest.approx(0.75, abs=1e-6)

    sig = torch.full((1, 1, 9, 12), math.log(0.8 / 0.2))  # sigmoid 0.8 everywhere
    loss = L.skeleton_recall_loss(sig, target.float().unsqueeze(1), task="binary")
    assert float(loss) == pytest.approx(0.2, abs=1e-6)


def test_gradient_flows_only_through_skeleton_pixels() -> None:
    target = torch.zeros(1, 9, 12, dtype=torch.long)
    target[0, 3:6, 2:10] = 1
    logits = torch.zeros(1, 2, 9, 12, requires_grad=True)
    L.skeleton_recall_loss(logits, target, task="binary").backward()
    moved = logits.grad.abs().sum(1)[0] > 0  # type: ignore[union-attr]
    assert moved.equal(target[0] == 1)


def test_dice_ce_skeleton_is_the_sum_of_its_parts() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 16, 16)
    target = (torch.rand(2, 16, 16) > 0.6).long()
    combined = L.build_loss("dice_ce_skeleton", task="binary", lambda_skeleton=0.5)(logits, target)
    parts = L.build_loss("dice_ce", task="binary")(logits, target) + 0.5 * L.skeleton_recall_loss(
        logits, target, task="binary"
    )
    assert float(combined) == pytest.approx(float(parts), abs=1e-6)
    assert "skeleton_recall" in L.LOSS_NAMES and "lambda_skeleton" in L.loss_options("dice_ce_skeleton")
