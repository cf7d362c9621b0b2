"""Training data, EMA, the training loop on real images, sampling and run files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from scipy.stats import wasserstein_distance

import unetkit.models.diffusion  # noqa: F401  (registers diffusion_unet)
from unetkit.diffusion.checkpoint import load_run, save_run
from unetkit.diffusion.data import load_image_folder, random_batch
from unetkit.diffusion.samplers import Sampling, sample_images
from unetkit.diffusion.schedule import NoiseSchedule, ScheduleConfig
from unetkit.diffusion.train import EMA, DiffusionTrainConfig, train_diffusion
from unetkit.models.factory import create_model

TINY = {"base_channels": 16, "channel_mults": [1, 2], "num_res_blocks": 1}


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


# -- data ---------------------------------------------------------------------------------------------
def test_folder_reads_grey_rgb_and_16bit_tiff_scaled_to_minus_one_one(tmp_path: Path) -> None:
    _png(tmp_path / "a" / "grey.png", np.full((8, 9), 255, np.uint8))
    _png(tmp_path / "rgb.jpg", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "b").mkdir()
    tifffile.imwrite(tmp_path / "b" / "deep.tif", np.full((10, 8), 65535, np.uint16))
    folder = load_image_folder(tmp_path, image_size=8)
    assert folder.channels == 3  # one colour image makes the set RGB
    assert [p.name for p in folder.paths] == ["grey.png", "deep.tif", "rgb.jpg"]
    batch, labels = random_batch(folder, batch_size=12, image_size=8, generator=torch.Generator().manual_seed(0))
    assert batch.shape == (12, 3, 8, 8) and labels is None
    # every crop is uniformly white (1.0) or black (-1.0 up to JPEG error)
    per_crop = batch.flatten(1)
    assert torch.all((per_crop.min(1).values > 0.999) | (per_crop.max(1).values < -0.95))
    grey = load_image_folder(tmp_path, image_size=8, channels=1)
    assert grey.channels == 1 and grey.images[2].shape == (1, 8, 8)


def test_crops_are_windows_of_the_image(tmp_path: Path) -> None:
    ramp = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (5, 1))  # 5 x 25, value = 10 * column
    _png(tmp_path / "ramp.png", ramp)
    folder = load_image_folder(tmp_path, image_size=4)
    batch, _ = random_batch(folder, batch_size=20, image_size=4, generator=torch.Generator().manual_seed(1), flip=False)
    pixels = (batch + 1) / 2 * 255
    steps = pixels[:, 0, :, 1:] - pixels[:, 0, :, :-1]
    assert torch.allclose(steps, torch.full_like(steps, 10.0), atol=1e-3)  # contiguous, unflipped columns
    assert torch.allclose(pixels[:, 0, 0], pixels[:, 0, 3])  # all rows alike
    starts = pixels[:, 0, 0, 0].round()
    assert set(starts.tolist()) <= {10.0 * c for c in range(22)}  # 25 columns - 4 + 1 possible offsets
    assert len(set(starts.tolist())) > 5  # the offsets really are random


def test_class_labels_come_from_folder_names(two_class_folder: Path) -> None:
    folder = load_image_folder(two_class_folder, image_size=16, class_conditional=True)
    assert folder.class_names == ["bright", "dark"]
    batch, labels = random_batch(folder, batch_size=32, image_size=16, generator=torch.Generator().manual_seed(0))
    # bright images (label 0) are ~210/255 -> +0.65, dark ones (label 1) ~40/255 -> -0.69
    means = batch.mean(dim=(1, 2, 3))
    assert torch.all((means > 0.5) == (labels == 0))


def test_non_image_file_is_named_unless_skipped(tmp_path: Path) -> None:
    _png(tmp_path / "ok.png", np.zeros((16, 16), np.uint8))
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    (tmp_path / ".DS_Store").write_bytes(b"\0")  # hidden files are not data
    with pytest.raises(ValueError, match=r"2 file\(s\).*--skip-bad.*broken\.png \(cannot decode.*notes\.txt \(not an image type"):
        load_image_folder(tmp_path, image_size=16)
    folder = load_image_folder(tmp_path, image_size=16, skip_bad=True)
    assert [p.name for p in folder.paths] == ["ok.png"]
    assert sorted(p.name for p, _ in folder.skipped) == ["broken.png", "notes.txt"]


def test_too_small_images_are_named(tmp_path: Path) -> None:
    _png(tmp_path / "big.png", np.zeros((40, 40), np.uint8))
    _png(tmp_path / "narrow.png", np.zeros((40, 20), np.uint8))
    with pytest.raises(ValueError, match=r"1 image\(s\) are smaller than the requested 32x32.*narrow\.png \(20x40"):
        load_image_folder(tmp_path, image_size=32)


def test_other_folder_errors(tmp_path: Path, two_class_folder: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        load_image_folder(tmp_path / "missing", image_size=8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images found"):
        load_image_folder(tmp_path / "empty", image_size=8)
    _png(two_class_folder / "loose.png", np.zeros((20, 20), np.uint8))
    with pytest.raises(ValueError, match="sit directly in"):
        load_image_folder(two_class_folder, image_size=8, class_conditional=True)


# -- EMA ----------------------------------------------------------------------------------------------
def test_ema_hand_values() -> None:
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)  # warm-up decay min(0.5, 1/10) = 0.1 -> 0.1 * 0 + 0.9 * 1
    assert float(ema.model.weight) == pytest.approx(0.9)
    with torch.no_grad():
        model.weight.fill_(3.0)
    ema.update(model)  # decay min(0.5, 2/11) = 2/11
    assert float(ema.model.weight) == pytest.approx(2 / 11 * 0.9 + 9 / 11 * 3.0)
    ema.updates = 1000
    assert ema.current_decay() == 0.5
    assert not ema.model.weight.requires_grad


# -- training on real images -------------------------------------------------------------------------
def _pixel_values(images: torch.Tensor) -> np.ndarray:
    return ((images.flatten() + 1) / 2).numpy()


def test_training_lowers_the_loss_and_samples_move_towards_the_data(em_images: Path) -> None:
    """40 steps on 16x16 EM crops: loss falls, and trained samples' intensity histogram is far closer to the
    data's than an untrained model's (whose clipped x0 predictions pile up at black and white)."""
    data = load_image_folder(em_images, image_size=16)
    schedule = NoiseSchedule(ScheduleConfig())
    torch.manual_seed(0)
    model = create_model("diffusion_unet", in_channels=1, **TINY)
    untrained = sample_images(model, schedule, shape=(16, 1, 16, 16), sampling=Sampling(num_steps=10), generator=torch.Generator().manual_seed(0))
    config = DiffusionTrainConfig(image_size=16, steps=40, time_budget_s=None, batch_size=8, lr=2e-3, seed=0)
    result = train_diffusion(model, schedule, data, config)
    assert len(result.losses) == 40 and not result.interrupted
    first, last = np.mean(result.losses[:10]), np.mean(result.losses[-10:])
    assert last < 0.5 * first, (first, last)
    trained = sample_images(
        result.ema_model, schedule, shape=(16, 1, 16, 16), sampling=Sampling(num_steps=10), generator=torch.Generator().manual_seed(0)
    )
    real, _ = random_batch(data, batch_size=64, image_size=16, generator=torch.Generator().manual_seed(1))
    d_untrained = wasserstein_distance(_pixel_values(untrained), _pixel_values(real))
    d_trained = wasserstein_distance(_pixel_values(trained), _pixel_values(real))
    assert d_trained < 0.4 * d_untrained, (d_trained, d_untrained)


def test_time_budget_stops_training(two_class_folder: Path) -> None:
    data = load_image_folder(two_class_folder, image_size=8, class_conditional=True)
    model = create_model("diffusion_unet", in_channels=1, num_classes=2, base_channels=8, channel_mults=[1], num_res_blocks=1)
    config = DiffusionTrainConfig(image_size=8, steps=None, time_budget_s=0.3, batch_size=2, seed=0)
    result = train_diffusion(model, NoiseSchedule(), data, config)
    assert len(result.losses) >= 1 and 0.3 <= result.seconds < 60  # stops at the first step past the budget
    with pytest.raises(ValueError, match="steps or a time budget"):
        DiffusionTrainConfig(steps=None, time_budget_s=None)


# -- sampling and run files --------------------------------------------------------------------------
def _random_model(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model("diffusion_unet", in_channels=1, base_channels=8, channel_mults=[1, 2], num_res_blocks=1, **kw)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_sampling_is_seeded_and_independent_of_batch_size(sampler: str) -> None:
    model, schedule = _random_model(), NoiseSchedule()
    kw = dict(shape=(4, 1, 8, 8), sampling=Sampling(sampler=sampler, num_steps=5, eta=0.5))
    a = sample_images(model, schedule, generator=torch.Generator().manual_seed(3), **kw)
    b = sample_images(model, schedule, generator=torch.Generator().manual_seed(3), batch_size=3, **kw)
    c = sample_images(model, schedule, generator=torch.Generator().manual_seed(4), **kw)
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, c, atol=1e-2)
    assert a.shape == (4, 1, 8, 8) and float(a.abs().max()) <= 1.0


def test_run_round_trip_needs_no_pickle(tmp_path: Path) -> None:
    model = _random_model(num_classes=2)
    schedule = ScheduleConfig(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction")
    save_run(tmp_path / "run", model=model, schedule=schedule, image_size=8, channels=1, class_names=["a", "b"])
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["name"] == "diffusion_unet" and config["format_version"] == 1
    assert config["diffusion"]["schedule"]["prediction_type"] == "v_prediction"
    loaded = load_run(tmp_path / "run")
    assert loaded.schedule == schedule and loaded.class_names == ["a", "b"] and loaded.image_size == 8
    x, t, y = torch.randn(2, 1, 8, 8), torch.tensor([1, 600]), torch.tensor([1, 0])
    model.eval()
    assert torch.equal(loaded.model(x, t, class_labels=y), model(x, t, class_labels=y))


def test_lead_load_model_reads_a_diffusion_run(tmp_path: Path) -> None:
    """config.json keeps the segmentation checkpoint's keys, so unetkit.load_model rebuilds the denoiser."""
    from unetkit.models.base import load_model

    model = _random_model().eval()
    save_run(tmp_path, model=model, schedule=ScheduleConfig(), image_size=8, channels=1)
    x = torch.randn(1, 1, 8, 8)
    assert torch.equal(load_model(tmp_path).eval()(x, 5), model(x, 5))


def test_load_run_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_run(tmp_path)
    model = _random_model()
    save_run(tmp_path, model=model, schedule=ScheduleConfig(), image_size=8, channels=1)
    config = json.loads((tmp_path / "config.json").read_text())
    config["kwargs"]["base_channels"] = 16
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="do not fit"):
        load_run(tmp_path)
    del config["diffusion"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="not a unetkit diffusion run"):
        load_run(tmp_path)
