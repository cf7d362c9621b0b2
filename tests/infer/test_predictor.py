"""Predictor on real images: sizes, hand-computed single-tile and TTA oracles, fast path == plain path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _run_factory import make_run

from unetkit.data.io import read_image
from unetkit.infer.fastpath import fold_batchnorm
from unetkit.infer.predictor import Predictor
from unetkit.models.base import load_model

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
ISBI_PNG = DATA / "isbi2012_em_membrane" / "images" / "0.png"
DRIVE_TIF = DATA / "drive_retina_vessels" / "training" / "images" / "21_training.tif"
HIPPO = DATA / "msd_task04_hippocampus" / "images" / "hippocampus_001.nii.gz"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"dataset file {path} is not available")
    return path


def batch_norms(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d))]


def zscore(image: np.ndarray) -> np.ndarray:
    """Per-channel z-score in float64, computed independently of unetkit.data.normalize."""
    x = image.astype(np.float64)
    axes = tuple(range(1, x.ndim))
    return (x - x.mean(axis=axes, keepdims=True)) / x.std(axis=axes, keepdims=True)


def test_isbi_png_single_tile_equals_softmax_of_the_network_on_the_zscored_image(tmp_path: Path) -> None:
    image = read_image(need(ISBI_PNG)).array  # (1, 512, 512) uint8
    run = make_run(tmp_path / "run", tile=512)
    result = Predictor.from_run(run, fast=False)(image)
    model = load_model(run / "best").eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(zscore(image)).float()[None])[0]
    expected = torch.softmax(logits, dim=0).numpy()
    assert result.labels.shape == (512, 512) and result.labels.dtype == np.int64
    assert result.probabilities.shape == (2, 512, 512) and result.uncertainty is None
    np.testing.assert_allclose(result.probabilities, expected, atol=1e-5)
    np.testing.assert_array_equal(result.labels, expected.argmax(axis=0))
    assert 0 < result.labels.mean() < 1  # the oracle is not trivially constant


def test_isbi_png_fast_path_matches_plain_path(tmp_path: Path) -> None:
    image = read_image(need(ISBI_PNG)).array
    run = make_run(tmp_path / "run", tile=128, overlap=0.25)
    # fp32 pinned: this is an exactness test of folding + layout; bf16 has its own test below.
    plain, fast = Predictor.from_run(run, fast=False), Predictor.from_run(run, fast=True, precision="fp32")
    # The batch norms carry real statistics, and the fast path really folded them away.
    norms = batch_norms(plain.model)
    assert norms and all(not torch.allclose(bn.running_var, torch.ones_like(bn.running_var)) for bn in norms)
    assert batch_norms(fast.model) == [] and len(batch_norms(plain.model)) > 0
    a, b = plain(image), fast(image)
    assert b.labels.shape == image.shape[1:]
    assert np.abs(a.probabilities - b.probabilities).max() < 1e-4
    np.testing.assert_allclose(b.probabilities.sum(axis=0), 1.0, atol=1e-5)
    assert (a.labels != b.labels).mean() < 1e-4  # only exact ties may flip


def test_drive_tiff_rgb_odd_size_fast_equals_plain(tmp_path: Path) -> None:
    image = read_image(need(DRIVE_TIF)).array  # (3, 584, 565): not a multiple of the tile or the stride
    run = make_run(tmp_path / "run", in_channels=3, tile=128, overlap=0.25, seed=1)
    a = Predictor.from_run(run, fast=False)(image)
    b = Predictor.from_run(run, precision="fp32")(image)
    assert a.labels.shape == b.labels.shape == (584, 565)
    assert a.probabilities.shape == (2, 584, 565)
    assert np.abs(a.probabilities - b.probabilities).max() < 1e-4


def test_fold_batchnorm_is_exact_for_a_trained_looking_model(tmp_path: Path) -> None:
    model = load_model(make_run(tmp_path / "run", width=8, depth=3) / "best").eval()
    x = torch.randn(2, 1, 48, 40) * 3.0
    with torch.no_grad():
        diff = (fold_batchnorm(model)(x) - model(x)).abs().max().item()
    assert diff < 1e-4
    assert len(batch_norms(model)) == 14  # 7 conv blocks x 2; the original is untouched (folding works on a copy)


def test_fold_batchnorm_without_affine_parameters() -> None:
    torch.manual_seed(0)
    seq = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1, bias=True), torch.nn.BatchNorm2d(3, affine=False))
    seq.train()
    with torch.no_grad():
        seq(torch.randn(4, 2, 8, 8) * 2 + 1)
    seq.eval()
    x = torch.randn(1, 2, 8, 8)
    with torch.no_grad():
        np.testing.assert_allclose(fold_batchnorm(seq)(x).numpy(), seq(x).numpy(), atol=1e-5)


def test_tta_d4_single_tile_is_the_mean_of_the_eight_aligned_views(tmp_path: Path) -> None:
    image = read_image(need(ISBI_PNG)).array[:, 100:228, 200:328]  # 128 x 128: one square tile
    run = make_run(tmp_path / "run", tile=128, tta="d4")
    result = Predictor.from_run(run, fast=False)(image)
    model = load_model(run / "best").eval()
    x = zscore(image)[None]  # (1, 1, 128, 128)
    views = []
    for flip in (False, True):
        for k in range(4):
            v = np.rot90(x[..., ::-1] if flip else x, k, axes=(-2, -1))
            with torch.no_grad():
                p = torch.softmax(model(torch.from_numpy(v.copy()).float()), dim=1).numpy()
            p = np.rot90(p, -k, axes=(-2, -1))
            views.append(p[..., ::-1] if flip else p)
    stack = np.stack(views)[:, 0]  # (8, K, H, W)
    np.testing.assert_allclose(result.probabilities, stack.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(result.uncertainty, stack.var(axis=0).mean(axis=0), atol=1e-6)
    assert result.uncertainty.max() > 1e-6  # views do disagree: the untrained model is not D4-invariant


def test_tta_through_the_predictor_on_a_larger_image_gives_uncertainty(tmp_path: Path) -> None:
    image = read_image(need(ISBI_PNG)).array[:, :200, :260]
    run = make_run(tmp_path / "run", tile=96, overlap=0.25, tta="flips")
    result = Predictor.from_run(run)(image)
    assert result.uncertainty is not None and result.uncertainty.shape == (200, 260)
    assert result.uncertainty.min() >= 0
    plain = Predictor.from_run(run, tta="none")(image)
    assert plain.uncertainty is None
    assert np.abs(plain.probabilities - result.probabilities).max() > 1e-4  # TTA changed something


def test_hippocampus_volume_with_a_3d_plan(tmp_path: Path) -> None:
    volume = read_image(need(HIPPO)).array  # (1, 35, 51, 35)
    run = make_run(tmp_path / "run", spatial_dims=3, tile=[32, 32, 32], overlap=0.25, classes=3, width=4, depth=2)
    a = Predictor.from_run(run, fast=False)(volume)
    b = Predictor.from_run(run, precision="fp32")(volume)
    assert b.labels.shape == volume.shape[1:]
    assert b.probabilities.shape == (3, *volume.shape[1:])
    assert np.abs(a.probabilities - b.probabilities).max() < 1e-4


def test_wrong_inputs_are_clear_errors(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", in_channels=3)
    predictor = Predictor.from_run(run)
    with pytest.raises(ValueError, match="takes 3 channel"):
        predictor(np.zeros((1, 64, 64), dtype=np.float32))
    with pytest.raises(ValueError, match="shape"):
        predictor(np.zeros((64, 64), dtype=np.float32))
    with pytest.raises(ValueError, match="unknown inference setting"):
        Predictor.from_run(run, tile=64)
    with pytest.raises(ValueError, match="unknown backend"):
        Predictor.from_run(run, backend="tensorrt")


def test_bf16_fast_path_stays_within_bf16_rounding_of_fp32_on_a_real_image(tmp_path: Path) -> None:
    """bf16 autocast runs on every CPU (emulated where it is not native), so this runs everywhere.

    Bounds: bf16 keeps 8 significant bits, so each rounding is off by at most 2^-9 ~ 2e-3 relative; softmax
    probabilities move by at most a quarter of a logit's error (dp/dz = p(1 - p) <= 1/4). This untrained model's
    logits are small (its head is centred, most pixels sit near p = 0.5) and carry ~1e-3 absolute error after
    its ~10 rounded layers, so probabilities may differ by a few 1e-4: the mean is held to 1e-3 and the maximum to
    1e-2, and a label may flip only where fp32 itself was within 1e-2 of a tie. (Label agreement and Dice of a
    trained model: tests/train/test_train_e2e.py.)
    """
    image = read_image(need(ISBI_PNG)).array
    run = make_run(tmp_path / "run", tile=256, overlap=0.25, width=8)
    fp32 = Predictor.from_run(run, precision="fp32")
    bf16 = Predictor.from_run(run, precision="bf16")
    assert fp32.amp_dtype is None and bf16.amp_dtype is torch.bfloat16
    a, b = fp32(image), bf16(image)
    diff = np.abs(a.probabilities - b.probabilities)
    assert diff.max() > 1e-5  # bf16 really ran
    assert diff.mean() < 1e-3 and diff.max() < 1e-2
    flipped = a.labels != b.labels
    assert np.all(np.abs(a.probabilities[1] - 0.5)[flipped] < 1e-2)  # only near-ties flip


def test_auto_precision_follows_the_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import unetkit.precision as precision

    run = make_run(tmp_path / "run", tile=64)
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: True)
    native = Predictor.from_run(run)
    assert native.amp_dtype is torch.bfloat16 and native.precision.layout is torch.channels_last
    assert "auto: bf16, native on this" in native.precision.describe()
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: False)
    emulated = Predictor.from_run(run)
    assert emulated.amp_dtype is None and emulated.precision.layout is torch.channels_last
    assert "auto: fp32 on this" in emulated.precision.describe()
    assert Predictor.from_run(run, fast=False).precision.describe().startswith("precision: fp32, contiguous")
    with pytest.raises(ValueError, match="needs the fast path"):
        Predictor.from_run(run, fast=False, precision="bf16")
