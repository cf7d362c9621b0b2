"""Tiled prediction: grid, weights, the blending formula, and equality with whole-image prediction."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn as nn

from unetkit.runtime.tiling import (
    TileSettings,
    axis_starts,
    constant_weights,
    fits_one_tile,
    gaussian_weights,
    pad_to_tile,
    padded_shape,
    predict_raster_windows,
    sliding_window_predict,
    tile_grid,
)

RADIUS = 3  # receptive-field radius of _conv_model: three 3x3 convolutions


def _conv_model(spatial_dims: int, *, seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
    """Three 'same' 3x3 convolutions with zero padding: each output sees a (2*RADIUS+1)^d neighbourhood."""
    torch.manual_seed(seed)
    conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    model = nn.Sequential(
        conv(2, 4, 3, padding=1), nn.Tanh(), conv(4, 4, 3, padding=1), nn.Tanh(), conv(4, 3, 3, padding=1)
    )
    return model.eval().to(dtype)


def _whole(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(image[None])[0]


@pytest.mark.parametrize(
    ("size", "tile", "overlap", "expected"),
    [
        (10, 4, 0.5, [0, 2, 4, 6]),
        (11, 4, 0.5, [0, 2, 4, 6, 7]),  # last tile flush with the border
        (10, 4, 0.0, [0, 4, 6]),
        (6, 4, 0.75, [0, 1, 2]),
        (9, 5, 0.5, [0, 2, 4]),  # step floor(2.5) = 2
        (4, 4, 0.5, [0]),
        (3, 4, 0.5, [0]),  # shorter than the tile: one (padded) tile
    ],
)
def test_axis_starts_hand_computed(size: int, tile: int, overlap: float, expected: list[int]) -> None:
    assert axis_starts(size, tile, overlap=overlap) == expected


def test_tile_grid_covers_in_bounds_row_major() -> None:
    shape, tile = (11, 7, 9), (4, 4, 5)
    grid = tile_grid(shape, tile, overlap=0.5)
    assert len(grid) == 5 * 3 * 3
    assert grid[0] == (slice(0, 4), slice(0, 4), slice(0, 5))
    assert grid[1] == (slice(0, 4), slice(0, 4), slice(2, 7))  # last axis fastest
    covered = np.zeros(shape, dtype=int)
    for t in grid:
        assert all(s.stop - s.start == n for s, n in zip(t, tile, strict=True))
        assert all(0 <= s.start and s.stop <= n for s, n in zip(t, shape, strict=True))
        covered[t] += 1
    assert covered.min() >= 1


def test_padded_shape_only_grows_short_axes() -> None:
    assert padded_shape((5, 40), (16, 16)) == (16, 40)
    assert tile_grid((5, 40), 16, overlap=0.5)[0] == (slice(0, 16), slice(0, 16))


def test_gaussian_weights_hand_formula() -> None:
    w = gaussian_weights((5,), sigma_scale=0.25, min_weight=1e-6)
    sigma = 0.25 * 5
    expected = np.exp(-((np.arange(5) - 2.0) ** 2) / (2 * sigma**2))
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-6)
    w2 = gaussian_weights((4, 6), sigma_scale=0.125, min_weight=1e-3)
    assert w2.shape == (4, 6) and w2.dtype == torch.float32
    assert float(w2.min()) == pytest.approx(1e-3) and float(w2.max()) <= 1.0
    assert torch.equal(w2, w2.flip(0)) and torch.equal(w2, w2.flip(1))
    assert bool((w2 > 0).all())
    with pytest.raises(ValueError, match="min_weight"):
        gaussian_weights((4,), min_weight=0.0)
    assert torch.equal(constant_weights((2, 3)), torch.ones(2, 3))


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
def test_blend_is_weighted_mean_of_tiles(blend: str) -> None:
    """fn predicts one value per tile (its mean); the output must be sum(w*v)/sum(w) computed by hand."""
    rng = np.random.default_rng(0)
    image = rng.normal(size=(1, 13, 10)).astype(np.float32)

    def tile_mean(x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3), keepdim=True).expand(-1, 1, *x.shape[2:])

    out = sliding_window_predict(tile_mean, torch.from_numpy(image), TileSettings(tile_size=(6, 4), overlap=0.5, blend=blend, batch_size=3, sigma_scale=0.25))  # fmt: skip
    w = (
        gaussian_weights((6, 4), sigma_scale=0.25) if blend == "gaussian" else constant_weights((6, 4))
    ).numpy()
    num, den = np.zeros((13, 10)), np.zeros((13, 10))
    for t in tile_grid((13, 10), (6, 4), overlap=0.5):
        num[t] += w * image[0][t].mean()
        den[t] += w
    np.testing.assert_allclose(out[0].numpy(), num / den, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
@pytest.mark.parametrize(
    ("shape", "tile", "dtype"),
    [
        ((37, 29), (16, 16), torch.float32),
        ((37, 29), (16, 12), torch.float64),
        ((19, 23, 17), (12, 12, 12), torch.float32),
    ],
)
def test_tiled_equals_whole_image_with_context(
    blend: str, shape: tuple, tile: tuple, dtype: torch.dtype
) -> None:
    """With context >= receptive-field radius, every kept tile pixel equals the whole-image prediction."""
    torch.manual_seed(1)
    image = torch.randn(2, *shape, dtype=dtype)
    model = _conv_model(len(shape), dtype=dtype)
    tiled = sliding_window_predict(model, image, TileSettings(tile_size=tile, overlap=0.5, blend=blend, batch_size=3, context=RADIUS))
    assert tiled.shape == (3, *shape) and tiled.dtype == torch.float32
    assert float((tiled.double() - _whole(model, image).double()).abs().max()) < 1e-5


def test_without_context_tile_borders_differ() -> None:
    """The equality above is not automatic: without context, tile-edge zero padding changes the result."""
    image = torch.randn(2, 37, 29, generator=torch.Generator().manual_seed(2))
    model = _conv_model(2)
    tiled = sliding_window_predict(model, image, TileSettings(tile_size=16, overlap=0.5, blend="constant"))
    assert float((tiled - _whole(model, image)).abs().max()) > 1e-3


@pytest.mark.parametrize("shape", [(37, 29), (5, 7), (6, 40)])
@pytest.mark.parametrize("blend", ["gaussian", "constant"])
def test_pointwise_model_needs_no_context(shape: tuple, blend: str) -> None:
    """A 1x1-conv model is tile-independent, so any blend of its tiles is the whole-image result (padding too)."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.Sigmoid()).eval()
    image = torch.randn(2, *shape)
    tiled = sliding_window_predict(model, image, TileSettings(tile_size=16, overlap=0.25, blend=blend))
    assert tiled.shape == (3, *shape)
    assert float((tiled - _whole(model, image)).abs().max()) < 1e-6


@pytest.mark.parametrize(
    ("pad_mode", "np_mode"), [("constant", "constant"), ("replicate", "edge"), ("reflect", "reflect")]
)
def test_small_image_is_padded_at_the_end(pad_mode: str, np_mode: str) -> None:
    image = np.arange(2 * 5 * 7, dtype=np.float32).reshape(1, 10, 7)[:, :5]
    seen = []

    def record(x: torch.Tensor) -> torch.Tensor:
        seen.append(x[0, 0].numpy().copy())
        return x

    out = sliding_window_predict(record, torch.from_numpy(image), TileSettings(tile_size=(8, 8), pad_mode=pad_mode))
    np.testing.assert_array_equal(seen[0], np.pad(image[0], ((0, 3), (0, 1)), mode=np_mode))
    np.testing.assert_allclose(out[0].numpy(), image[0], rtol=1e-6)


@pytest.mark.parametrize("pad_mode", ["constant", "replicate"])
def test_pad_to_tile_is_the_one_tile_sliding_window_sends(pad_mode: str) -> None:
    image = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 5, 8)).astype(np.float32))
    seen = []

    def record(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.clone())
        return x

    sliding_window_predict(record, image, TileSettings(tile_size=(8, 8), pad_mode=pad_mode))
    assert len(seen) == 1 and seen[0].shape == (1, 2, 8, 8)
    assert torch.equal(pad_to_tile(image, (8, 8), pad_mode=pad_mode), seen[0][0])
    assert fits_one_tile((5, 8), 8) and fits_one_tile((8, 8, 3), (8, 8, 4))
    assert not fits_one_tile((5, 9), (8, 8)) and not fits_one_tile((9, 8, 3), 8)
    with pytest.raises(ValueError, match=r"image \(5, 9\) is larger than one tile \(8, 8\)"):
        pad_to_tile(torch.zeros(1, 5, 9), 8)


def test_dtype_device_and_out_channel_checks() -> None:
    image = torch.randn(1, 20, 20)

    def f64(x: torch.Tensor) -> torch.Tensor:
        assert x.dtype == torch.float64 and x.device.type == "cpu"
        return x.repeat(1, 2, 1, 1)

    out = sliding_window_predict(f64, image, TileSettings(tile_size=8, dtype=torch.float64, device="cpu", out_channels=2))
    assert out.dtype == torch.float32 and out.shape == (2, 20, 20)
    with pytest.raises(ValueError, match="out_channels"):
        sliding_window_predict(f64, image, TileSettings(tile_size=8, dtype=torch.float64, out_channels=3))
    with pytest.raises(ValueError, match=r"\(B, K, \*tile\)"):
        sliding_window_predict(lambda x: x[:, :, :4], image, TileSettings(tile_size=8))


def test_bad_settings_raise_clear_errors() -> None:
    image = torch.zeros(1, 30, 30)
    with pytest.raises(ValueError, match="overlap >= 0.375"):
        sliding_window_predict(lambda x: x, image, TileSettings(tile_size=16, overlap=0.25, context=3))
    with pytest.raises(ValueError, match="overlap must be in"):
        sliding_window_predict(lambda x: x, image, TileSettings(tile_size=16, overlap=1.0))
    with pytest.raises(ValueError, match="tile_size has 3 values"):
        sliding_window_predict(lambda x: x, image, TileSettings(tile_size=(8, 8, 8)))
    with pytest.raises(ValueError, match="blend"):
        sliding_window_predict(lambda x: x, image, TileSettings(tile_size=8, blend="median"))
    with pytest.raises(ValueError, match="reflect"):
        sliding_window_predict(lambda x: x, torch.zeros(1, 3, 30), TileSettings(tile_size=8, pad_mode="reflect"))


class _Raster:
    """An in-memory raster with the read/write callbacks of predict_raster_windows, checking their use."""

    def __init__(self, image: np.ndarray, out_channels: int) -> None:
        self.image = image
        self.out = np.full((out_channels, *image.shape[1:]), np.nan, dtype=np.float32)
        self.writes = np.zeros(image.shape[1:], dtype=int)

    def read(self, rows: slice, cols: slice) -> np.ndarray:
        assert (
            0 <= rows.start < rows.stop <= self.image.shape[1]
            and 0 <= cols.start < cols.stop <= self.image.shape[2]
        )
        return self.image[:, rows, cols]

    def write(self, rows: slice, cols: slice, probs: np.ndarray) -> None:
        assert probs.dtype == np.float32 and probs.shape[1:] == (
            rows.stop - rows.start,
            cols.stop - cols.start,
        )
        self.out[:, rows, cols] = probs
        self.writes[rows, cols] += 1


def _non_local(model: nn.Module):  # type: ignore[no-untyped-def]
    """A model plus the tile's mean: its prediction depends on the whole tile, not on a neighbourhood."""
    return lambda x: model(x) + x.mean(dim=(1, 2, 3), keepdim=True)


@pytest.mark.parametrize("chunk_tiles", [1, 3])
def test_windowed_equals_whole_raster_blend_for_any_model(chunk_tiles: int) -> None:
    """Chunks blend exactly the global grid's tiles, so the output is the whole-raster blend, bit for bit."""
    rng = np.random.default_rng(4)
    image = rng.normal(size=(2, 41, 35)).astype(np.float32)
    fn = _non_local(_conv_model(2))
    raster = _Raster(image, 3)
    kwargs = {"tile_size": (12, 8), "overlap": 0.5, "blend": "gaussian", "batch_size": 1}
    stats = predict_raster_windows(fn, raster.read, raster.write, size=(41, 35), settings=TileSettings(**kwargs), chunk_tiles=chunk_tiles)
    whole = sliding_window_predict(fn, torch.from_numpy(image), TileSettings(**kwargs)).numpy()
    assert (raster.writes == 1).all()
    np.testing.assert_array_equal(raster.out, whole)
    assert stats.tiles_in_grid == len(tile_grid((41, 35), (12, 8), overlap=0.5))
    assert stats.tiles_predicted >= stats.tiles_in_grid
    assert stats.max_window[0] <= chunk_tiles * 6 + 2 * 12 and stats.max_window[1] <= chunk_tiles * 4 + 2 * 8


def test_windowed_batched_and_with_context_matches_model() -> None:
    rng = np.random.default_rng(5)
    image = rng.normal(size=(2, 33, 30)).astype(np.float32)
    model = _conv_model(2)
    whole_model = _whole(model, torch.from_numpy(image)).numpy()
    for blend in ("gaussian", "constant"):
        raster = _Raster(image, 3)
        predict_raster_windows(model, raster.read, raster.write, size=(33, 30), settings=TileSettings(tile_size=12, overlap=0.5, blend=blend, batch_size=3, context=RADIUS), chunk_tiles=2)  # fmt: skip
        assert (raster.writes == 1).all()
        assert np.abs(raster.out - whole_model).max() < 1e-5


def test_windowed_small_raster_is_padded_like_whole_image() -> None:
    image = np.random.default_rng(6).normal(size=(1, 5, 30)).astype(np.float32)
    fn = _non_local(nn.Identity())
    raster = _Raster(image, 1)
    stats = predict_raster_windows(fn, raster.read, raster.write, size=(5, 30), settings=TileSettings(tile_size=8), chunk_tiles=1)
    whole = sliding_window_predict(fn, torch.from_numpy(image), TileSettings(tile_size=8))
    np.testing.assert_allclose(raster.out, whole.numpy(), rtol=0, atol=1e-6)
    assert stats.max_window[0] == 8


def test_grid_counts_over_dimensions() -> None:
    for shape in itertools.product((7, 16, 33), repeat=2):
        grid = tile_grid(shape, 16, overlap=0.5)
        assert len(grid) == len(axis_starts(shape[0], 16, overlap=0.5)) * len(
            axis_starts(shape[1], 16, overlap=0.5)
        )


def test_windowed_memory_does_not_grow_with_the_raster() -> None:
    windows = []
    for size in (150, 400):
        raster = _Raster(np.zeros((1, size, size), dtype=np.float32), 1)
        stats = predict_raster_windows(lambda x: x, raster.read, raster.write, size=(size, size), settings=TileSettings(tile_size=16, overlap=0.5, batch_size=64), chunk_tiles=4)  # fmt: skip
        assert (raster.writes == 1).all()
        windows.append(stats.max_window)
    assert windows[0] == windows[1] and max(windows[1]) <= 4 * 8 + 2 * 16


def test_one_tile_covering_the_image_returns_the_network_output_unblended() -> None:
    # 50 x 60 pads to one 64 x 64 tile: w * y / w would round; the output is y itself, cropped.
    net = nn.Conv2d(2, 3, 3, padding=1).eval()
    image = torch.randn(2, 50, 60)
    out = sliding_window_predict(net, image, TileSettings(tile_size=(64, 64)))
    with torch.no_grad():
        expected = net(torch.nn.functional.pad(image, (0, 4, 0, 14))[None])[0, :, :50, :60]  # zeros
    assert out.dtype == torch.float32 and out.shape == (3, 50, 60)
    assert torch.equal(out, expected)
