"""Patch sampling: crops, padding with the ignore index, foreground centring."""

from __future__ import annotations

import numpy as np
import pytest

from unetkit.train.sampling import sample_patch


def test_small_image_is_padded_image_zero_mask_ignore() -> None:
    image = np.ones((1, 3, 4), np.float32)
    mask = np.ones((3, 4), np.int64)
    img, msk = sample_patch(image, mask, patch_size=(5, 6), rng=np.random.default_rng(0), foreground=False)
    assert img.shape == (1, 5, 6) and msk.shape == (5, 6)
    assert img.sum() == 12 and (msk == 1).sum() == 12  # every real pixel is kept once
    assert set(np.unique(msk)) == {1, 255} and set(np.unique(img)) == {0.0, 1.0}


def test_crop_is_an_exact_slice() -> None:
    image = np.arange(100, dtype=np.float32).reshape(1, 10, 10)
    mask = np.arange(100).reshape(10, 10)
    img, msk = sample_patch(image, mask, patch_size=(4, 3), rng=np.random.default_rng(3), foreground=False)
    r, c = np.argwhere(mask == msk[0, 0])[0]
    np.testing.assert_array_equal(msk, mask[r : r + 4, c : c + 3])
    np.testing.assert_array_equal(img[0], image[0, r : r + 4, c : c + 3])


def test_foreground_patches_contain_the_rare_class() -> None:
    mask = np.zeros((200, 200), np.int64)
    mask[150:153, 20:23] = 1  # 9 of 40,000 pixels
    image = np.zeros((1, 200, 200), np.float32)
    rng = np.random.default_rng(0)
    hits = [sample_patch(image, mask, patch_size=(32, 32), rng=rng, foreground=True)[1].max() for _ in range(20)]
    assert all(h == 1 for h in hits)
    uniform = [sample_patch(image, mask, patch_size=(32, 32), rng=rng, foreground=False)[1].max() for _ in range(50)]
    assert sum(uniform) < 10  # a uniform crop rarely finds it


def test_volume_and_dimension_mismatch() -> None:
    vol = np.zeros((1, 8, 9, 10), np.float32)
    img, msk = sample_patch(vol, np.zeros((8, 9, 10), np.int64), patch_size=(4, 4, 4), rng=np.random.default_rng(0),
                            foreground=True)  # fmt: skip
    assert img.shape == (1, 4, 4, 4) and msk.shape == (4, 4, 4)
    with pytest.raises(ValueError, match="does not match"):
        sample_patch(vol, np.zeros((8, 9, 10), np.int64), patch_size=(4, 4), rng=np.random.default_rng(0), foreground=False)


def test_class_zero_is_a_centre_when_it_is_a_real_class() -> None:
    # Class 0 only in a 3x3 corner of a class-1 image: with background=True no patch can be centred on it.
    mask = np.ones((64, 64), np.int64)
    mask[:3, :3] = 0
    image = np.zeros((1, 64, 64), np.float32)
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(40):
        _, patch = sample_patch(image, mask, patch_size=(8, 8), rng=rng, foreground=True, background=False)
        hits += int((patch == 0).any())
    # Classes {0, 1} are picked with equal chance, so about half the patches hold the corner.
    assert 10 <= hits <= 30
    for _ in range(20):
        _, patch = sample_patch(image, mask, patch_size=(8, 8), rng=rng, foreground=True, background=True)
        assert not (patch[:, :] == 0).all()


def test_dice_term_covers_class_zero_when_it_is_a_real_class() -> None:
    """Target: class 0 on the left half, class 1 on the right; the prediction is class 2 on the left.
    Soft Dice per class: class 0 -> 0, class 1 -> 1, class 2 -> 0. Without background the Dice term is
    the mean over classes 0-2 (loss 2/3), with background over 1-2 (loss 1/2): the difference is 1/6."""
    import torch

    from unetkit.config import Plan
    from unetkit.data.options import DataConfig
    from unetkit.train.loop import _loss

    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[..., 4:] = 1
    logits = torch.full((1, 3, 8, 8), -30.0)
    logits[:, 2, :, :4] = 30.0
    logits[:, 1, :, 4:] = 30.0
    losses = {}
    for background in (True, False):
        plan = Plan.from_dict({"data": DataConfig(task="multiclass", background=background).__dict__})
        losses[background] = float(_loss(plan)(logits, target))
    assert losses[False] - losses[True] == pytest.approx(1 / 6, abs=1e-3)
