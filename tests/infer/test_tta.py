"""Test-time augmentation: view sets, inversion, merging checked against numpy by hand, uncertainty, scales."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from unetkit.infer.tta import Resize, View, apply_tta, make_tta_fn, tta_cost, tta_scales, tta_views
from unetkit.runtime.tiling import TileSettings, sliding_window_predict

LEVELS = ("none", "flips", "d4", "d4+scales")


def _random_conv(spatial_dims: int, *, seed: int = 0) -> nn.Module:
    """A model with random (not symmetric) kernels: not equivariant to flips or rotations."""
    torch.manual_seed(seed)
    conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    return (
        nn.Sequential(conv(2, 3, 3, padding=1), nn.Tanh(), conv(3, 2, 3, padding=1), nn.Sigmoid())
        .eval()
        .double()
    )


def _symmetric_conv(*, seed: int = 0) -> nn.Module:
    """A 3x3 conv whose kernels are invariant under the 8 symmetries of the square: D4-equivariant."""
    model = _random_conv(2, seed=seed)
    with torch.no_grad():
        for layer in (model[0], model[2]):
            w = layer.weight
            sym = sum(torch.rot90(v, k, dims=(-2, -1)) for v in (w, w.flip(-1)) for k in range(4)) / 8
            w.copy_(sym)
    return model


def _np_views_2d() -> list[tuple[tuple[int, ...], int]]:
    """The D4 views as (numpy flip axes of an (H, W) array, quarter turns), built independently of tta.py."""
    return [(flip, k) for flip in ((), (1,)) for k in range(4)]


def _run(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(np.ascontiguousarray(x))).numpy()


def _hand_d4_predictions(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """Apply each view with numpy, predict, undo the view with numpy: (8, B, K, H, W)."""
    preds = []
    for flip, k in _np_views_2d():
        xv = np.rot90(np.flip(x, axis=tuple(2 + a for a in flip)), k, axes=(-2, -1))
        y = _run(model, xv)
        preds.append(np.flip(np.rot90(y, -k, axes=(-2, -1)), axis=tuple(2 + a for a in flip)))
    return np.stack(preds)


def test_view_counts_and_cost() -> None:
    assert [len(tta_views(level, 2)) for level in LEVELS] == [1, 4, 8, 8]
    assert [len(tta_views(level, 3)) for level in LEVELS] == [1, 8, 8, 8]
    assert [tta_cost(level, 2) for level in LEVELS] == [1, 4, 8, 24]
    assert [tta_cost(level, 3) for level in LEVELS] == [1, 8, 8, 24]
    assert tta_cost("d4+scales", 2, scales=(1.0, 2.0)) == 16
    assert tta_scales("d4") == (1.0,) and tta_scales("d4+scales") == (0.75, 1.0, 1.25)
    for level in LEVELS:
        assert tta_views(level, 2)[0] == View()
    with pytest.raises(ValueError, match="unknown TTA level"):
        tta_views("d8", 2)


@pytest.mark.parametrize(("level", "dims"), [("d4", 2), ("flips", 2), ("flips", 3)])
def test_views_are_distinct_and_invertible(level: str, dims: int) -> None:
    x = torch.arange(2 * 5 * 7 * (3 if dims == 3 else 1), dtype=torch.float64).reshape(
        1, 2, *((3,) if dims == 3 else ()), 5, 7
    )
    if dims == 2:
        x = torch.arange(2 * 5 * 5, dtype=torch.float64).reshape(
            1, 2, 5, 5
        )  # square: rotations keep the shape
    seen = set()
    for view in tta_views(level, dims):
        y = view.apply(x)
        seen.add(tuple(y.flatten().tolist()))
        assert torch.equal(view.invert(y), x)
    assert len(seen) == len(tta_views(level, dims))


@pytest.mark.parametrize("shape", [(1, 2, 6, 6), (2, 1, 5, 8), (1, 2, 4, 5, 6)])
@pytest.mark.parametrize("level", ["none", "flips", "d4"])
def test_identity_model_gives_identity(shape: tuple, level: str) -> None:
    x = torch.randn(*shape, dtype=torch.float64)
    merged, unc = apply_tta(lambda b: b, x, views=tta_views(level, len(shape) - 2))
    torch.testing.assert_close(merged, x, rtol=0, atol=1e-14)  # mean of identical views, up to rounding
    assert unc is not None and unc.shape == (shape[0], 1, *shape[2:]) and float(unc.abs().max()) < 1e-28


def test_identity_model_with_nearest_scales_is_identity() -> None:
    x = torch.randn(1, 2, 6, 7, dtype=torch.float64)
    merged, _ = apply_tta(
        lambda b: b, x, views=tta_views("d4", 2), scales=(1.0, 2.0, 3.0), resize=Resize(interpolation="nearest")
    )
    torch.testing.assert_close(merged, x, rtol=0, atol=1e-12)


def test_mean_max_gmean_variance_equal_hand_computed() -> None:
    model = _random_conv(2)
    x = np.random.default_rng(0).normal(size=(2, 2, 7, 9))  # non-square: rotated views form a second group
    preds = _hand_d4_predictions(model, x)
    views = tta_views("d4", 2)
    for merge, expected in (
        ("mean", preds.mean(0)),
        ("max", preds.max(0)),
        ("gmean", np.exp(np.log(preds).mean(0))),
    ):
        merged, unc = apply_tta(model, torch.from_numpy(x), views=views, merge=merge)
        np.testing.assert_allclose(merged.numpy(), expected, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(unc.numpy(), preds.var(0).mean(1, keepdims=True), rtol=1e-8, atol=1e-14)


def test_entropy_of_mean_probabilities() -> None:
    model = _random_conv(2)  # two sigmoid channels: treat as a 2-class distribution after normalising
    softmax_model = nn.Sequential(model, nn.Softmax(dim=1))
    x = np.random.default_rng(1).normal(size=(1, 2, 6, 6))
    p = _hand_d4_predictions(softmax_model, x).mean(0)
    _, unc = apply_tta(softmax_model, torch.from_numpy(x), views=tta_views("d4", 2), uncertainty="entropy")
    np.testing.assert_allclose(unc.numpy(), -(p * np.log(p)).sum(1, keepdims=True), rtol=1e-8)
    one = nn.Sequential(model, nn.Conv2d(2, 1, 1).double(), nn.Sigmoid())
    q = _hand_d4_predictions(one, x).mean(0)
    _, unc1 = apply_tta(one, torch.from_numpy(x), views=tta_views("d4", 2), uncertainty="entropy")
    np.testing.assert_allclose(unc1.numpy(), -(q * np.log(q) + (1 - q) * np.log(1 - q)), rtol=1e-8)


def test_3d_flips_hand_computed() -> None:
    model = _random_conv(3)
    x = np.random.default_rng(2).normal(size=(1, 2, 4, 5, 6))
    preds = []
    for axes in ((), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)):
        ax = tuple(2 + a for a in axes)
        preds.append(np.flip(_run(model, np.flip(x, axis=ax)), axis=ax))
    merged, _ = apply_tta(model, torch.from_numpy(x), views=tta_views("flips", 3))
    np.testing.assert_allclose(merged.numpy(), np.mean(preds, axis=0), rtol=1e-10, atol=1e-12)


def test_uncertainty_zero_for_equivariant_positive_otherwise() -> None:
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    pointwise = nn.Sequential(nn.Conv2d(2, 3, 1), nn.Sigmoid()).double().eval()
    for model in (pointwise, _symmetric_conv()):
        _, unc = apply_tta(model, x, views=tta_views("d4", 2))
        assert float(unc.max()) < 1e-20
    _, unc = apply_tta(_random_conv(2), x, views=tta_views("d4", 2))
    assert float(unc.max()) > 1e-4


def test_linear_scale_matches_hand_interpolation() -> None:
    """Scale 0.5 of a 4x4 image: down = 2x2 block means; up (align_corners=False) = U @ M @ U.T."""
    image = np.arange(16, dtype=np.float64).reshape(4, 4) ** 1.5
    blocks = image.reshape(2, 2, 2, 2).mean(axis=(1, 3))
    up = np.array([[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
    merged, _ = apply_tta(
        lambda b: b, torch.from_numpy(image)[None, None], scales=(0.5,), uncertainty=None
    )
    np.testing.assert_allclose(merged[0, 0].numpy(), up @ blocks @ up.T, rtol=1e-12)


def test_scales_shapes_and_size_multiple() -> None:
    sizes = []

    def record(b: torch.Tensor) -> torch.Tensor:
        sizes.append(tuple(b.shape[2:]))
        return b[:, :1] * 2

    x = torch.randn(1, 2, 7, 9, dtype=torch.float64)
    merged, unc = apply_tta(record, x, scales=(0.75, 1.0, 1.25), resize=Resize(size_multiple=4))
    assert merged.shape == (1, 1, 7, 9) and unc.shape == (1, 1, 7, 9)
    assert sorted(sizes) == [(4, 8), (7, 9), (8, 12)]  # 5.25->4, 6.75->8; 8.75->8, 11.25->12


def test_views_are_batched() -> None:
    calls = []

    def record(b: torch.Tensor) -> torch.Tensor:
        calls.append(b.shape[0])
        return b

    apply_tta(record, torch.randn(3, 1, 6, 6), views=tta_views("d4", 2))
    assert calls == [24]  # all 8 views of the 3 tiles in one forward pass
    calls.clear()
    apply_tta(record, torch.randn(3, 1, 6, 5), views=tta_views("d4", 2))
    assert sorted(calls) == [12, 12]  # rotated views of a non-square tile have another shape
    calls.clear()
    apply_tta(record, torch.randn(3, 1, 6, 6), views=tta_views("d4", 2), max_batch=7)
    assert calls == [6, 6, 6, 6]


def test_make_tta_fn_adds_uncertainty_channel_and_tiles() -> None:
    model = _random_conv(2).float()
    fn = make_tta_fn(model, level="flips", spatial_dims=2, uncertainty="variance")
    x = torch.randn(2, 20, 17)
    out = sliding_window_predict(fn, x, TileSettings(tile_size=8, overlap=0.5))
    assert out.shape == (3, 20, 17)
    assert float(out[2].min()) >= 0 and float(out[2].max()) > 0
    plain = make_tta_fn(model, level="none")
    with torch.no_grad():
        torch.testing.assert_close(plain(x[None]), model(x[None]))


def test_bad_arguments() -> None:
    x = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match="merge"):
        apply_tta(lambda b: b, x, merge="median")
    with pytest.raises(ValueError, match="flips an axis"):
        apply_tta(lambda b: b, x, views=[View(flips=(2,))])
    with pytest.raises(ValueError, match="scales"):
        apply_tta(lambda b: b, x, scales=(0.0,))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        apply_tta(lambda b: b, torch.zeros(4, 4))
