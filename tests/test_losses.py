"""Losses: hand-computed values, ignore_index, empty targets, MONAI as an oracle, deep supervision, factory."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from unetkit import losses as L

LN3 = math.log(3.0)


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


# --------------------------------------------------------------------------------------- hand-computed
def test_cross_entropy_hand_computed_with_and_without_class_weights():
    # Two pixels, softmax of logits (0, ln 3) = (0.25, 0.75). Targets 1 and 0.
    logits = torch.tensor([[0.0, 0.0], [LN3, LN3]]).view(1, 2, 1, 2)
    target = torch.tensor([[[1, 0]]])
    plain = (-math.log(0.75) - math.log(0.25)) / 2
    assert float(L.ce_loss(logits, target, task="multiclass")) == pytest.approx(plain, rel=1e-6)
    # Weights (1, 3): pixel of class 1 weighs 3 -> (3 * -ln .75 + 1 * -ln .25) / (3 + 1).
    weighted = (3 * -math.log(0.75) + 1 * -math.log(0.25)) / 4
    got = L.ce_loss(logits, target, task="multiclass", class_weights=[1.0, 3.0])
    assert float(got) == pytest.approx(weighted, rel=1e-6)
    assert float(got) != pytest.approx(plain, rel=1e-3)
    assert float(got) == pytest.approx(
        float(F.cross_entropy(logits, target, weight=torch.tensor([1.0, 3.0])))
    )


def test_bce_hand_computed_with_pos_weight_and_ignore():
    logits = torch.tensor([_logit(0.8), _logit(0.4), 5.0]).view(1, 1, 1, 3)
    target = torch.tensor([[[1, 0, 255]]])  # third pixel ignored
    expected = (-math.log(0.8) - math.log(0.6)) / 2
    assert float(L.ce_loss(logits, target, task="binary")) == pytest.approx(expected, rel=1e-6)
    expected_pw = (-2 * math.log(0.8) - math.log(0.6)) / 2
    assert float(L.ce_loss(logits, target, task="binary", class_weights=[2.0])) == pytest.approx(
        expected_pw, rel=1e-6
    )


def test_dice_and_tversky_hand_computed_sigmoid():
    # p = (0.8, 0.4, 0.2, 0.9), g = (1, 1, 0, 0): TP = 1.2, sum p = 2.3, sum g = 2 -> FP 1.1, FN 0.8.
    logits = torch.tensor([_logit(p) for p in (0.8, 0.4, 0.2, 0.9)]).view(1, 1, 2, 2)
    target = torch.tensor([[1.0, 1.0], [0.0, 0.0]]).view(1, 1, 2, 2)
    dice = L.dice_loss(logits, target, task="binary", smooth=0.0)
    assert float(dice) == pytest.approx(1 - 2.4 / 4.3, rel=1e-6)
    tv = L.tversky_loss(logits, target, task="binary", alpha=0.3, beta=0.7, smooth=0.0)
    ti = 1.2 / (1.2 + 0.3 * 1.1 + 0.7 * 0.8)
    assert float(tv) == pytest.approx(1 - ti, rel=1e-6)
    ftv = L.focal_tversky_loss(logits, target, task="binary", gamma=0.75, smooth=0.0)
    assert float(ftv) == pytest.approx((1 - ti) ** 0.75, rel=1e-6)
    # Smoothing s: (2 TP + s) / (2 TP + FP + FN + s).
    assert float(L.dice_loss(logits, target, task="binary", smooth=1.0)) == pytest.approx(
        1 - 3.4 / 5.3, rel=1e-6
    )


def test_dice_batch_vs_per_sample_and_background_hand_computed():
    # Sample 0: p = (1, 0) vs g = (1, 0); sample 1: p = (0.5, 0.5) vs g = (0, 0), sigmoid-free via huge logits.
    big = 30.0
    logits = torch.tensor([[[big, -big]], [[0.0, 0.0]]]).view(2, 1, 1, 2)
    target = torch.tensor([[[1.0, 0.0]], [[0.0, 0.0]]]).view(2, 1, 1, 2)
    # Per sample: dice_0 ~ 1, dice_1 = (0 + s) / (1 + s) ~ 0 -> loss ~ 0.5.
    per_sample = L.dice_loss(logits, target, task="binary", batch_dice=False)
    assert float(per_sample) == pytest.approx(0.5, abs=1e-4)
    # Batch: TP 1, sum p 2, sum g 1 -> dice 2/3 -> loss 1/3.
    assert float(L.dice_loss(logits, target, task="binary", batch_dice=True)) == pytest.approx(
        1 / 3, abs=1e-4
    )
    # Softmax, 2 classes: with background the loss averages two Dice scores.
    two = torch.tensor([[big, -big], [-big, big]]).view(1, 2, 1, 2)  # predicts (0, 1)
    y = torch.tensor([[[0, 0]]])  # target (0, 0): background dice 2/3, foreground 0 (pred 1 px, target none)
    with_bg = L.dice_loss(two, y, task="binary", include_background=True)
    assert float(with_bg) == pytest.approx(((1 - 2 / 3) + 1) / 2, abs=1e-4)
    assert float(L.dice_loss(two, y, task="binary", include_background=False)) == pytest.approx(1.0, abs=1e-4)


def test_focal_hand_computed_and_gamma_zero_is_ce():
    logits = torch.tensor([0.0, LN3]).view(1, 2, 1, 1)  # p = (0.25, 0.75)
    target = torch.tensor([[[1]]])
    expected = -(0.25**2) * math.log(0.75)
    assert float(L.focal_loss(logits, target, task="multiclass", gamma=2.0)) == pytest.approx(
        expected, rel=1e-6
    )
    # alpha 0.25: class 1 (foreground) weighs 0.25, background 0.75.
    got = L.focal_loss(logits, target, task="multiclass", gamma=2.0, alpha=0.25)
    assert float(got) == pytest.approx(0.25 * expected, rel=1e-6)
    sig = torch.tensor([_logit(0.9)]).view(1, 1, 1, 1)
    assert float(
        L.focal_loss(sig, torch.ones(1, 1, 1, 1), task="binary", gamma=2.0, alpha=0.25)
    ) == pytest.approx(0.25 * 0.1**2 * -math.log(0.9), rel=1e-5)
    x, y = torch.randn(2, 3, 5, 6), torch.randint(0, 3, (2, 5, 6))
    y[0, 0] = 255
    torch.testing.assert_close(
        L.focal_loss(x, y, task="multiclass", gamma=0.0), L.ce_loss(x, y, task="multiclass")
    )


def test_dice_ce_and_combined_are_weighted_sums():
    x, y = torch.randn(2, 3, 6, 6), torch.randint(0, 3, (2, 6, 6))
    dice, ce = L.dice_loss(x, y, task="multiclass"), L.ce_loss(x, y, task="multiclass")
    torch.testing.assert_close(L.DiceCE(task="multiclass")(x, y), dice + ce)
    torch.testing.assert_close(
        L.DiceCE(task="multiclass", lambda_dice=0.3, lambda_ce=2.0)(x, y), 0.3 * dice + 2 * ce
    )
    combo = L.CombinedLoss([L.DiceLoss(task="multiclass"), L.FocalLoss(task="multiclass")], [2.0, 0.5])
    torch.testing.assert_close(combo(x, y), 2 * dice + 0.5 * L.focal_loss(x, y, task="multiclass"))
    torch.testing.assert_close(
        L.DiceFocal(task="multiclass", gamma=1.0)(x, y),
        dice + L.focal_loss(x, y, task="multiclass", gamma=1.0),
    )


# ------------------------------------------------------------------------------- behaviour, all losses
def _cases(spatial):
    n = 2
    return [
        ("multiclass", torch.randn(n, 3, *spatial), torch.randint(0, 3, (n, *spatial))),
        ("binary", torch.randn(n, 2, *spatial), torch.randint(0, 2, (n, *spatial))),
        ("binary", torch.randn(n, 1, *spatial), torch.randint(0, 2, (n, *spatial))),
        ("multilabel", torch.randn(n, 3, *spatial), torch.randint(0, 2, (n, 3, *spatial)).float()),
    ]


@pytest.mark.parametrize("name", L.LOSS_NAMES)
@pytest.mark.parametrize("spatial", [(6, 7), (3, 4, 5)])
def test_ignored_pixels_get_zero_gradient_and_do_not_change_the_loss(name, spatial):
    torch.manual_seed(0)
    for task, x, y in _cases(spatial):
        y = y.clone()
        y[0, ..., :2] = 255  # a slab of ignored pixels in sample 0 (every channel for multilabel)
        x = x.requires_grad_(True)
        loss = L.build_loss(name, task=task)(x, y)
        loss.backward()
        assert torch.all(x.grad[0, ..., :2] == 0), (name, task)
        assert x.grad.abs().sum() > 0
        x2 = x.detach().clone()
        x2[0, ..., :2] = torch.randn_like(x2[0, ..., :2]) * 10
        torch.testing.assert_close(L.build_loss(name, task=task)(x2, y), loss.detach())


@pytest.mark.parametrize("name", L.LOSS_NAMES)
@pytest.mark.parametrize("batch_dice", [True, False])
def test_empty_targets_give_finite_gradients(name, batch_dice):
    torch.manual_seed(1)
    kw = {"batch_dice": batch_dice} if "batch_dice" in L.loss_options(name) else {}
    for spatial in [(5, 6), (3, 4, 4)]:
        for task, x, y in _cases(spatial):
            for logits in (x, torch.full_like(x, -20.0)):  # random, and confidently empty
                logits = logits.clone().requires_grad_(True)
                loss = L.build_loss(name, task=task, **kw)(logits, torch.zeros_like(y))
                loss.backward()
                assert torch.isfinite(loss) and torch.isfinite(logits.grad).all(), (name, task)
        # Everything ignored: loss 0, gradient 0, no NaN.
        x = torch.randn(1, 3, *spatial, requires_grad=True)
        loss = L.build_loss(name, task="multiclass", **kw)(x, torch.full((1, *spatial), 255))
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("batch_dice", [True, False])
@pytest.mark.parametrize("spatial", [(8, 8), (4, 5, 6)])
def test_dice_loss_is_zero_at_a_confident_perfect_prediction(batch_dice, spatial):
    torch.manual_seed(2)
    for task, x, y in _cases(spatial):
        if task == "multilabel" or (task == "binary" and x.shape[1] == 1):
            onehot = y if y.ndim == x.ndim else y.unsqueeze(1)
            logits = (onehot.float() * 2 - 1) * 30
        else:
            logits = F.one_hot(y, x.shape[1]).movedim(-1, 1).float() * 30
        loss = L.dice_loss(logits, y, task=task, batch_dice=batch_dice, include_background=True)
        assert float(loss) < 1e-5, task
        assert float(L.dice_loss(-logits, y, task=task, batch_dice=batch_dice)) > 0.9


# ------------------------------------------------------------------------------------- MONAI oracle
@pytest.fixture(scope="module")
def ml():
    return pytest.importorskip("monai.losses")


@pytest.mark.parametrize("spatial", [(7, 9), (4, 5, 6)])
@pytest.mark.parametrize("batch", [True, False])
@pytest.mark.parametrize("include_background", [True, False])
def test_dice_matches_monai(ml, spatial, batch, include_background):
    torch.manual_seed(3)
    x, y = torch.randn(2, 3, *spatial), torch.randint(0, 3, (2, *spatial))
    ref = ml.DiceLoss(softmax=True, to_onehot_y=True, batch=batch, include_background=include_background)
    ours = L.dice_loss(x, y, task="multiclass", batch_dice=batch, include_background=include_background)
    torch.testing.assert_close(ours, ref(x, y.unsqueeze(1)), atol=1e-5, rtol=0)
    t = (torch.rand(2, 3, *spatial) > 0.6).float()
    ref = ml.DiceLoss(sigmoid=True, batch=batch)
    torch.testing.assert_close(
        L.dice_loss(x, t, task="multilabel", batch_dice=batch), ref(x, t), atol=1e-5, rtol=0
    )
    # ignore_index (MONAI >= 1.5 masks ignored pixels the same way).
    y[:, :2] = 255
    ref = ml.DiceLoss(softmax=True, to_onehot_y=True, batch=batch, include_background=True, ignore_index=255)
    ours = L.dice_loss(x, y, task="multiclass", batch_dice=batch, include_background=True)
    torch.testing.assert_close(ours, ref(x, y.unsqueeze(1)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("spatial", [(7, 9), (4, 5, 6)])
def test_dice_ce_matches_monai(ml, spatial):
    torch.manual_seed(4)
    x, y = torch.randn(2, 4, *spatial), torch.randint(0, 4, (2, *spatial))
    ref = ml.DiceCELoss(softmax=True, to_onehot_y=True, include_background=False, batch=True)
    torch.testing.assert_close(L.DiceCE(task="multiclass")(x, y), ref(x, y.unsqueeze(1)), atol=1e-5, rtol=0)
    ref = ml.DiceCELoss(softmax=True, to_onehot_y=True, include_background=True, batch=False, lambda_ce=0.5)
    ours = L.DiceCE(task="multiclass", include_background=True, batch_dice=False, lambda_ce=0.5)(x, y)
    torch.testing.assert_close(ours, ref(x, y.unsqueeze(1)), atol=1e-5, rtol=0)
    # Single sigmoid channel: Dice + BCE.
    xb, tb = torch.randn(2, 1, *spatial), (torch.rand(2, 1, *spatial) > 0.5).float()
    ref = ml.DiceCELoss(sigmoid=True, batch=True)
    torch.testing.assert_close(L.DiceCE(task="binary")(xb, tb), ref(xb, tb), atol=1e-5, rtol=0)


@pytest.mark.parametrize("spatial", [(7, 9), (4, 5, 6)])
@pytest.mark.parametrize("gamma,alpha", [(2.0, None), (2.0, 0.25), (0.5, 0.75)])
def test_focal_matches_monai(ml, spatial, gamma, alpha):
    torch.manual_seed(5)
    x, t = torch.randn(2, 3, *spatial), (torch.rand(2, 3, *spatial) > 0.7).float()
    ref = ml.FocalLoss(gamma=gamma, alpha=alpha)
    ours = L.focal_loss(x, t, task="multilabel", gamma=gamma, alpha=alpha)
    torch.testing.assert_close(ours, ref(x, t), atol=1e-5, rtol=0)
    # Softmax: MONAI averages over pixels AND channels, we average over pixels only -> factor C.
    y = torch.randint(0, 3, (2, *spatial))
    ref = ml.FocalLoss(gamma=gamma, alpha=alpha, use_softmax=True, to_onehot_y=True)
    ours = L.focal_loss(x, y, task="multiclass", gamma=gamma, alpha=alpha)
    torch.testing.assert_close(ours, 3 * ref(x, y.unsqueeze(1)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("spatial", [(7, 9), (4, 5, 6)])
@pytest.mark.parametrize("batch", [True, False])
def test_tversky_matches_monai(ml, spatial, batch):
    torch.manual_seed(6)
    x, y = torch.randn(2, 3, *spatial), torch.randint(0, 3, (2, *spatial))
    ref = ml.TverskyLoss(
        softmax=True, to_onehot_y=True, alpha=0.3, beta=0.7, batch=batch, include_background=False
    )
    ours = L.tversky_loss(x, y, task="multiclass", alpha=0.3, beta=0.7, batch_dice=batch)
    torch.testing.assert_close(ours, ref(x, y.unsqueeze(1)), atol=1e-5, rtol=0)
    t = (torch.rand(2, 3, *spatial) > 0.5).float()
    ref = ml.TverskyLoss(sigmoid=True, alpha=0.6, beta=0.4, batch=batch)
    ours = L.tversky_loss(x, t, task="multilabel", alpha=0.6, beta=0.4, batch_dice=batch)
    torch.testing.assert_close(ours, ref(x, t), atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------- deep supervision
def test_deep_supervision_weights_and_nearest_downsampling():
    assert L.deep_supervision_weights(3) == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    torch.manual_seed(7)
    y = torch.randint(0, 3, (2, 8, 8))
    y[:, :2, :2] = 255
    outs = [torch.randn(2, 3, 8, 8), torch.randn(2, 3, 4, 4), torch.randn(2, 3, 2, 2)]
    base = L.DiceCE(task="multiclass")
    got = L.DeepSupervisionLoss(base)(outs, y)
    # Nearest with factor 2 keeps every other pixel starting at 0.
    expected = (
        4 / 7 * base(outs[0], y)
        + 2 / 7 * base(outs[1], y[:, ::2, ::2])
        + 1 / 7 * base(outs[2], y[:, ::4, ::4])
    )
    torch.testing.assert_close(got, expected)
    assert L.resize_target(y, (4, 4))[0, 0, 0] == 255 and L.resize_target(y, (4, 4)).dtype == torch.int64
    torch.testing.assert_close(L.DeepSupervisionLoss(base)(outs[0], y), base(outs[0], y))
    custom = L.DeepSupervisionLoss(base, weights=[1.0, 1.0, 0.0])(outs, y)
    torch.testing.assert_close(custom, 0.5 * base(outs[0], y) + 0.5 * base(outs[1], y[:, ::2, ::2]))


def test_deep_supervision_3d_multilabel_targets():
    t = (torch.rand(1, 2, 4, 6, 6) > 0.5).float()
    outs = [torch.randn(1, 2, 4, 6, 6), torch.randn(1, 2, 2, 3, 3)]
    base = L.DiceLoss(task="multilabel")
    got = L.DeepSupervisionLoss(base)(outs, t)
    torch.testing.assert_close(got, 2 / 3 * base(outs[0], t) + 1 / 3 * base(outs[1], t[:, :, ::2, ::2, ::2]))
    with pytest.raises(ValueError, match="2 outputs but 3"):
        L.DeepSupervisionLoss(base, weights=[1, 1, 1])(outs, t)


# ----------------------------------------------------------------------------------- factory, errors
def test_build_loss_names_and_errors():
    torch.manual_seed(8)
    x, y = torch.randn(1, 3, 4, 4), torch.randint(0, 3, (1, 4, 4))
    for name in L.LOSS_NAMES:
        assert torch.isfinite(L.build_loss(name, task="multiclass")(x, y))
    assert isinstance(L.build_loss(task="binary", deep_supervision=False), L.DiceCE)
    with pytest.raises(
        ValueError, match="valid names: dice_ce, dice, ce, focal, tversky, focal_tversky, dice_focal"
    ):
        L.build_loss("lovasz", task="multiclass")
    with pytest.raises(ValueError, match="does not take gamma"):
        L.build_loss("dice", task="multiclass", gamma=2.0)
    with pytest.raises(ValueError, match="does not take class_weights"):
        L.build_loss("tversky", task="multiclass", class_weights=[1, 2, 3])
    weighted = L.build_loss("ce", task="multiclass", class_weights=[1.0, 0.0, 0.0], deep_supervision=False)
    expected = L.ce_loss(x, torch.where(y == 0, y, 255), task="multiclass")  # only class 0 counts
    torch.testing.assert_close(weighted(x, y), expected)
    ft = L.build_loss(
        "focal_tversky", task="multiclass", alpha=0.5, beta=0.5, gamma=1.0, deep_supervision=False
    )
    torch.testing.assert_close(ft(x, y), L.tversky_loss(x, y, task="multiclass", alpha=0.5, beta=0.5))


@pytest.mark.parametrize(
    "logits,target,task,message",
    [
        (torch.randn(1, 3, 4, 4), torch.randint(0, 3, (1, 5, 4)), "multiclass", "does not fit"),
        (torch.randn(1, 3, 4, 4), torch.full((1, 4, 4), 3), "multiclass", r"values \[3\] outside 0..2"),
        (torch.randn(1, 3, 4, 4), torch.zeros(1, 4, 4), "multiclass", "integer tensor"),
        (torch.randn(1, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long), "binary", "1 \\(sigmoid\\) or 2"),
        (torch.randn(1, 2, 4, 4), torch.full((1, 2, 4, 4), 2.0), "multilabel", r"\[0, 1\]"),
        (torch.randn(1, 2, 4, 4), torch.zeros(1, 2, 4, 4), "semantic", "unknown task"),
    ],
)
def test_bad_inputs_raise_clear_errors(logits, target, task, message):
    with pytest.raises(ValueError, match=message):
        L.build_loss("dice_ce", task=task)(logits, target)


def test_class_weight_length_is_checked():
    with pytest.raises(ValueError, match="2 values but the logits have 3 channels"):
        L.ce_loss(
            torch.randn(1, 3, 2, 2),
            torch.zeros(1, 2, 2, dtype=torch.long),
            task="multiclass",
            class_weights=[1, 2],
        )


def test_tversky_index_counting_options_reach_the_counts_and_unknown_ones_are_refused() -> None:
    logits = torch.randn(3, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    target = (torch.arange(64).view(1, 8, 8) % 3 == 0).long().expand(3, 8, 8)
    per_sample = L.tversky_index(logits, target, task="multiclass", batch_dice=False)
    assert per_sample.shape == (3, 1)  # background left out, one row per sample
    with_background = L.tversky_index(logits, target, task="multiclass", include_background=True)
    assert with_background.shape == (2,)
    with pytest.raises(TypeError, match="batch_dcie"):
        L.tversky_index(logits, target, task="multiclass", batch_dcie=False)


def test_the_loss_registry_is_the_plans_choice_list() -> None:
    from unetkit.choices import LOSS_NAMES
    from unetkit.config import Plan

    assert tuple(L._LOSSES) == LOSS_NAMES == L.LOSS_NAMES
    with pytest.raises(ValueError, match=r"^train.loss: unknown 'dicee'; valid: dice_ce, dice, ce, "):
        Plan.from_dict({"train": {"loss": "dicee"}})
    with pytest.raises(ValueError, match=r"^infer.tta: unknown 'flip'; valid: none, flips, d4, d4\+scales$"):
        Plan.from_dict({"infer": {"tta": "flip"}})
