"""Paired augmentation: labels never invented, image and mask move together, reproducible, presets."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

# albumentations checks PyPI for a newer version on import (network + a warning); not in tests.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from unetkit.data.fingerprint import DataFingerprint, SizeSpread  # noqa: E402
from unetkit.data.io import image_shape, read_image  # noqa: E402
from unetkit.data.transforms import (  # noqa: E402
    PRESET_SETTINGS,
    PRESETS,
    Augmentation,
    AugmentSettings,
    build_augmentation,
    choose_preset,
)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
IGNORE = 255
NO_INTENSITY = {"intensity_p": 0.0, "gamma_p": 0.0, "noise_p": 0.0, "blur_p": 0.0}


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"dataset file {path} is not available")
    return path


def zscore(image: np.ndarray) -> np.ndarray:
    x = image.astype(np.float32)
    axes = tuple(range(1, x.ndim))
    return (x - x.mean(axis=axes, keepdims=True)) / (x.std(axis=axes, keepdims=True) + 1e-6)


def custom(settings: AugmentSettings, patch: tuple[int, ...]) -> Augmentation:
    return Augmentation(preset="custom", settings=settings, patch_size=patch, seed=None, ignore_index=IGNORE)


@pytest.fixture(scope="module")
def dubai_pair() -> tuple[np.ndarray, np.ndarray]:
    """A 128x128 crop of a real aerial image and its 6-class palette-index mask."""
    image = read_image(
        need(DATA / "dubai_aerial_landcover" / "images" / "tile_2" / "image_part_006.jpg")
    ).array
    mask = read_image(DATA / "dubai_aerial_landcover" / "masks" / "tile_2" / "image_part_006.png").array[0]
    return zscore(image[:, 100:228, 150:278]), mask[100:228, 150:278].astype(np.int64)


def asymmetric_pattern(shape: tuple[int, ...]) -> np.ndarray:
    """A binary shape with no mirror or rotation symmetry (an off-centre L plus a dot)."""
    pattern = np.zeros(shape, dtype=np.int64)
    h, w = shape[-2:]
    pattern[..., h // 8 : h // 2, w // 8 : w // 4] = 1
    pattern[..., h // 2 - h // 8 : h // 2, w // 8 : w // 2] = 1
    pattern[..., 3 * h // 4 : 3 * h // 4 + 3, 2 * w // 3 : 2 * w // 3 + 5] = 1
    if len(shape) == 3:
        pattern[: shape[0] // 3] = 0  # break the symmetry along depth too
    return pattern


def dihedral(a: np.ndarray) -> list[np.ndarray]:
    """The 8 flips / quarter turns of the last two axes."""
    out = []
    for k in range(4):
        r = np.rot90(a, k=k, axes=(-2, -1))
        out += [r, np.flip(r, axis=-1)]
    return out


# --- labels are never invented ------------------------------------------------------------------


@pytest.mark.parametrize("preset", PRESETS)
def test_masks_keep_their_labels_plus_ignore(preset: str, dubai_pair: tuple[np.ndarray, np.ndarray]) -> None:
    image, mask = dubai_pair
    # Spread the real class indices out so that any blending of two labels gives a new value.
    mask = np.array([0, 7, 30, 100, 150, 200])[mask]
    labels = set(np.unique(mask).tolist())
    assert len(labels) >= 3
    aug = build_augmentation(preset, patch_size=(128, 128))
    rng = np.random.default_rng(0)
    for _ in range(8):
        out_image, out_mask = aug(image, mask, rng)
        assert out_image.shape == image.shape and out_image.dtype == np.float32
        assert out_mask.shape == mask.shape and out_mask.dtype == np.int64
        assert set(np.unique(out_mask).tolist()) <= labels | {IGNORE}
        assert np.isfinite(out_image).all()


def test_outside_pixels_get_ignore_index_and_leave_the_roi(dubai_pair: tuple[np.ndarray, np.ndarray]) -> None:
    image, mask = dubai_pair
    shrink = AugmentSettings(flips=False, rot90=False, affine_p=1.0, scale=(0.6, 0.6), rotate=0.0, shift=0.0)
    roi = np.ones(mask.shape, dtype=bool)
    roi[:, :20] = False
    out_image, out_mask, out_roi = custom(replace(shrink, **NO_INTENSITY), (128, 128))(
        image, mask, np.random.default_rng(1), roi=roi
    )
    # Zooming out by 0.6 about the centre leaves a 0.2 * 128 ~ 25 px border with no source pixels.
    border = np.zeros(mask.shape, dtype=bool)
    border[:24], border[-24:], border[:, :24], border[:, -24:] = True, True, True, True
    assert (out_mask[border] == IGNORE).all()
    assert not out_roi[border].any()
    assert (out_mask[40:88, 40:88] != IGNORE).all() and out_roi[40:88, 40:88].all()
    assert out_roi.dtype == bool


# --- image and mask move together -------------------------------------------------------------


def test_flips_and_quarter_turns_move_image_and_mask_together() -> None:
    mask = asymmetric_pattern((64, 64))
    image = mask[np.newaxis].astype(np.float32) * 2.0 - 1.0  # thresholding at 0 gives the mask back
    geometry_only = AugmentSettings(affine_p=0.0, **NO_INTENSITY)
    aug = custom(geometry_only, (64, 64))
    rng = np.random.default_rng(7)
    candidates = dihedral(mask)
    seen = set()
    for _ in range(40):
        out_image, out_mask = aug(image, mask, rng)
        np.testing.assert_array_equal(out_mask, (out_image[0] > 0).astype(np.int64))
        matches = [i for i, c in enumerate(candidates) if np.array_equal(out_mask, c)]
        assert len(matches) == 1  # exactly one of the 8 orientations (the pattern has no symmetry)
        seen.add(matches[0])
    assert len(seen) >= 6  # the flips and turns really happen


@pytest.mark.parametrize("preset", ["microscopy", "medical", "aerial"])
def test_affine_and_elastic_keep_image_and_mask_aligned(preset: str) -> None:
    mask = asymmetric_pattern((96, 96))
    image = mask[np.newaxis].astype(np.float32) * 2.0 - 1.0
    settings = replace(
        PRESET_SETTINGS[preset], affine_p=1.0, elastic_p=1.0 if preset != "aerial" else 0.0, **NO_INTENSITY
    )
    aug = custom(settings, (96, 96))
    rng = np.random.default_rng(3)
    changed = 0
    for _ in range(10):
        out_image, out_mask = aug(image, mask, rng)
        labelled = out_mask != IGNORE
        agree = (out_mask == (out_image[0] > 0))[labelled].mean()
        # Linear (image) and nearest (mask) resampling may differ only on the shape's edge pixels.
        assert agree > 0.97
        changed += not any(np.array_equal(out_mask, c) for c in dihedral(mask))
    assert changed >= 8  # the non-rigid / non-quarter-turn geometry was actually applied


def test_intensity_changes_respect_each_channels_range(dubai_pair: tuple[np.ndarray, np.ndarray]) -> None:
    image, mask = dubai_pair  # z-scored: negative values, where a raw gamma would give NaN
    intensity_only = AugmentSettings(
        flips=False, rot90=False, affine_p=0.0, intensity_p=1.0, gamma_p=1.0, noise_p=1.0, blur_p=1.0
    )
    aug = custom(intensity_only, (128, 128))
    out_image, out_mask = aug(image, mask, np.random.default_rng(5))
    np.testing.assert_array_equal(out_mask, mask)  # intensity ops never touch the mask
    assert not np.allclose(out_image, image)
    lo, hi = image.min(axis=(1, 2)), image.max(axis=(1, 2))
    assert (out_image.min(axis=(1, 2)) >= lo - 1e-4).all() and (out_image.max(axis=(1, 2)) <= hi + 1e-4).all()


# --- reproducibility --------------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["microscopy", "aerial", "medical"])
def test_same_generator_state_gives_the_same_output(
    preset: str, dubai_pair: tuple[np.ndarray, np.ndarray]
) -> None:
    image, mask = dubai_pair
    aug = build_augmentation(preset, patch_size=(128, 128))
    other = build_augmentation(preset, patch_size=(128, 128))  # a fresh object: no hidden state
    rng_a, rng_b = np.random.default_rng(42), np.random.default_rng(42)
    for _ in range(3):
        a_img, a_mask = aug(image, mask, rng_a)
        b_img, b_mask = other(image, mask, rng_b)
        np.testing.assert_array_equal(a_img, b_img)
        np.testing.assert_array_equal(a_mask, b_mask)
    c_img, _ = aug(image, mask, np.random.default_rng(43))
    assert not np.array_equal(c_img, a_img)


def test_a_call_draws_exactly_one_number_from_the_generator(
    dubai_pair: tuple[np.ndarray, np.ndarray],
) -> None:
    image, mask = dubai_pair
    rng, reference = np.random.default_rng(9), np.random.default_rng(9)
    build_augmentation("microscopy", patch_size=(128, 128))(image, mask, rng)
    reference.integers(0, 2**63 - 1)
    assert rng.bit_generator.state == reference.bit_generator.state  # resume needs a fixed draw count


def test_seed_argument_makes_rng_free_calls_reproducible(dubai_pair: tuple[np.ndarray, np.ndarray]) -> None:
    image, mask = dubai_pair
    first = build_augmentation("aerial", patch_size=(128, 128), seed=11)
    second = build_augmentation("aerial", patch_size=(128, 128), seed=11)
    for _ in range(3):
        np.testing.assert_array_equal(first(image, mask)[0], second(image, mask)[0])


# --- shapes, channels, volumes ------------------------------------------------------------------


def test_non_square_and_many_channel_patches_keep_their_shape() -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(size=(6, 48, 80)).astype(np.float32)  # e.g. multispectral
    mask = rng.integers(0, 4, size=(48, 80))
    aug = build_augmentation("aerial", patch_size=(48, 80))
    for _ in range(6):
        out_image, out_mask = aug(image, mask, rng)
        assert out_image.shape == (6, 48, 80) and out_mask.shape == (48, 80)


def test_volumes_flip_and_turn_with_their_mask() -> None:
    mask = asymmetric_pattern((12, 32, 32))
    image = mask[np.newaxis].astype(np.float32) * 2.0 - 1.0
    aug = custom(AugmentSettings(**NO_INTENSITY), (12, 32, 32))
    rng = np.random.default_rng(2)
    candidates = [c for d in (mask, mask[::-1]) for c in dihedral(d)]  # depth flip x 8 in-plane
    seen = set()
    for _ in range(40):
        out_image, out_mask, out_roi = aug(image, mask, rng, roi=mask > 0)
        np.testing.assert_array_equal(out_mask, (out_image[0] > 0).astype(np.int64))
        np.testing.assert_array_equal(out_roi, out_mask > 0)
        seen.add(next(i for i, c in enumerate(candidates) if np.array_equal(out_mask, c)))
    assert len(seen) >= 10


def test_medical_preset_on_a_real_hippocampus_volume() -> None:
    root = DATA / "msd_task04_hippocampus"
    volume = read_image(need(root / "images" / "hippocampus_006.nii.gz")).array
    labels = read_image(root / "labels" / "hippocampus_006.nii.gz").array[0].astype(np.int64)
    image, mask = zscore(volume[:, :32, :32, :32]), labels[:32, :32, :32]
    aug = build_augmentation("medical", patch_size=(32, 32, 32))
    out = [aug(image, mask, np.random.default_rng(s)) for s in (0, 0, 1)]
    for out_image, out_mask in out:
        assert out_image.shape == image.shape and out_mask.shape == mask.shape
        assert set(np.unique(out_mask).tolist()) <= set(np.unique(mask).tolist())
        # Rigid moves only: every label keeps its voxel count.
        assert np.array_equal(
            np.bincount(out_mask.ravel(), minlength=3), np.bincount(mask.ravel(), minlength=3)
        )
    np.testing.assert_array_equal(out[0][0], out[1][0])


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown augmentation preset 'fancy'"):
        build_augmentation("fancy", patch_size=(64, 64))
    with pytest.raises(ValueError, match="patch_size"):
        build_augmentation("default", patch_size=(64,))
    aug = build_augmentation("default", patch_size=(32, 32))
    image = np.zeros((1, 32, 32), np.float32)
    with pytest.raises(ValueError, match="does not match"):
        aug(image, np.zeros((32, 31), np.int64))
    with pytest.raises(ValueError, match=">= 0"):
        aug(image, -np.ones((32, 32), np.int64))
    with pytest.raises(ValueError, match="integer labels"):
        aug(image, np.zeros((32, 32), np.float32))
    with pytest.raises(ValueError, match="expects an image"):
        aug(np.zeros((32, 32), np.float32), np.zeros((32, 32), np.int64))


# --- choosing a preset ------------------------------------------------------------------------


def _facts(dims: int, channels: int, size: list[float] | None = None, **kw: bool) -> DataFingerprint:
    return DataFingerprint(spatial_dims=[dims], channels=[channels], sizes=SizeSpread(median=size or []), **kw)


@pytest.mark.parametrize(
    ("fingerprint", "expected"),
    [
        (_facts(3, 1, [36, 50, 35]), "medical"),
        (_facts(2, 3, [512, 512], georeferenced=True), "aerial"),
        (_facts(2, 8, [256, 256]), "aerial"),
        (_facts(2, 3, [584, 565], has_roi=True), "medical"),
        (_facts(2, 3, [1500, 2000]), "aerial"),
        (_facts(2, 3, [480, 640]), "default"),
        (_facts(2, 1, [512, 512]), "microscopy"),
        (_facts(2, 1, [312, 258]), "industrial"),
        (_facts(2, 1, [1024, 3000]), "default"),
        (_facts(2, 1), "default"),
        (DataFingerprint(), "default"),  # nothing recorded: 2D, one channel, no size
        # The dict form, as ``unetkit check --json`` prints it.
        (DataFingerprint.from_dict({"spatial_dims": 2, "channels": [1], "sizes": {"median": [512, 512]}}), "microscopy"),
        (DataFingerprint.from_dict({"spatial_dims": [2], "channels": [3], "sizes": {"median": [842, 979]}}), "aerial"),
        (DataFingerprint.from_dict({"spatial_dims": [2, 3], "channels": [1]}), "medical"),  # the largest counts
    ],
)
def test_choose_preset_rules(fingerprint: DataFingerprint, expected: str) -> None:
    assert choose_preset(fingerprint) == expected


@pytest.mark.parametrize(
    ("pattern", "extra", "expected"),
    [
        ("isbi2012_em_membrane/images/*.png", {}, "microscopy"),
        ("magnetic_tile_defects/images/*/*.jpg", {}, "industrial"),
        ("dubai_aerial_landcover/images/*/*.jpg", {}, "aerial"),
        ("drive_retina_vessels/training/images/*.tif", {"has_roi": True}, "medical"),
        ("msd_task04_hippocampus/images/hippocampus_00*.nii.gz", {}, "medical"),
    ],
)
def test_choose_preset_on_the_real_datasets(pattern: str, extra: dict, expected: str) -> None:
    files = sorted(DATA.glob(pattern))
    if not files:
        pytest.skip(f"{pattern} not available")
    shapes = np.array([image_shape(f) for f in files])
    fingerprint = _facts(shapes.shape[1] - 1, int(shapes[0, 0]), np.median(shapes[:, 1:], axis=0).tolist(), **extra)
    assert choose_preset(fingerprint) == expected
