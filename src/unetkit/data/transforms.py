"""Paired augmentation of an image and its label mask (plus an optional ROI mask), by domain preset.

Why albumentations (2.x) for the 2D work: it is actively maintained, it moves an image and any
number of masks with one set of random parameters (masks get nearest-neighbour interpolation and
their own fill value, so labels are never blended or invented), it has the elastic deformation
the original U-Net relied on, and it runs on OpenCV, which is fast on a CPU. Volumes
``(C, D, H, W)`` use a small numpy implementation (albumentations is 2D): flips on every axis,
in-plane quarter turns, intensity scale / shift / gamma and noise.

Conventions:

- the public call takes channels-first float32 images ``(C, H, W)`` / ``(C, D, H, W)`` (already
  normalised) and int64 masks ``(H, W)`` / ``(D, H, W)``, and returns the same layout and dtypes
  with the same spatial shape;
- intensity changes are made on each channel rescaled to [0, 1] by its own min / max and mapped
  back afterwards, so they mean the same thing whatever the normalisation (z-scored values can be
  negative, which albumentations' float ops would otherwise clip or turn into NaN);
- pixels that geometric ops bring in from outside the image get ``ignore_index`` in the mask
  (not learnt from, not scored) and 0 in the ROI;
- every call draws exactly one integer from the caller's ``numpy.random.Generator`` and derives
  all its randomness from it: the same generator state gives the same output, so a training
  run resumed from a saved generator state continues exactly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from unetkit.data.fingerprint import DataFingerprint

PRESETS = ("default", "microscopy", "medical", "aerial", "industrial", "none")

# albumentations' elastic field is uniform(-1, 1) noise smoothed by a Gaussian of ``sigma`` and
# multiplied by ``alpha``; its std is about 0.2 * alpha / sigma (measured for sigma 4-20 px on
# 256-px patches: 0.17-0.29), so alpha = displacement * sigma / 0.2 gives the wanted displacement.
_SMOOTHED_NOISE_STD = 0.2


@dataclass(frozen=True)
class AugmentSettings:
    """What one preset does. Probabilities are per patch; sizes are fractions of the patch side.

    Attributes:
        flips: mirror each spatial axis with probability 0.5.
        rot90: random quarter turns in the (H, W) plane (only applied to square patches).
        affine_p / scale / rotate / shift: probability of a scale-rotate-shift, scale range,
            maximum rotation in degrees (+-), maximum shift as a fraction of the patch size.
        elastic_p / elastic_sigma / elastic_disp: probability of an elastic deformation, the
            smoothness of its field (Gaussian sigma) and its typical (about one std) displacement,
            both as fractions of the smaller patch side.
        intensity_p / brightness / contrast: probability and ranges of a brightness / contrast
            change (brightness as a fraction of the channel range, contrast as a gain of 1 +- c).
        gamma_p / gamma: probability and range of a gamma curve.
        noise_p / noise_std: probability and range of the std of Gaussian noise (fraction of range).
        blur_p / blur_sigma: probability and sigma range (pixels) of a Gaussian blur.
    """

    flips: bool = True
    rot90: bool = True
    affine_p: float = 0.5
    scale: tuple[float, float] = (0.85, 1.15)
    rotate: float = 15.0
    shift: float = 0.05
    elastic_p: float = 0.0
    elastic_sigma: float = 0.04
    elastic_disp: float = 0.01
    intensity_p: float = 0.5
    brightness: float = 0.15
    contrast: float = 0.15
    gamma_p: float = 0.3
    gamma: tuple[float, float] = (0.8, 1.25)
    noise_p: float = 0.2
    noise_std: tuple[float, float] = (0.0, 0.03)
    blur_p: float = 0.1
    blur_sigma: tuple[float, float] = (0.5, 1.0)


PRESET_SETTINGS: dict[str, AugmentSettings] = {
    "default": AugmentSettings(),
    # EM / fluorescence: no canonical orientation, soft tissue deforms, contrast varies per section.
    "microscopy": AugmentSettings(
        rotate=180.0, scale=(0.85, 1.2), elastic_p=0.5, elastic_sigma=0.06, elastic_disp=0.02,
        brightness=0.2, contrast=0.2, gamma=(0.7, 1.5), noise_p=0.3, noise_std=(0.0, 0.05),
        blur_p=0.2, blur_sigma=(0.5, 1.5),
    ),
    # Scans and fundus photos: anatomy has an up / down, mild deformation, scanner intensity drift.
    "medical": AugmentSettings(
        rot90=False, scale=(0.85, 1.25), elastic_p=0.2, elastic_sigma=0.05, elastic_disp=0.005,
        gamma=(0.7, 1.5), noise_p=0.15, blur_p=0.2,
    ),
    # Top-down views: any orientation; straight man-made edges (no elastic); haze and sun angle.
    "aerial": AugmentSettings(
        rotate=30.0, scale=(0.75, 1.25), brightness=0.2, contrast=0.2, noise_p=0.1, noise_std=(0.0, 0.02),
    ),
    # Inspection crops: fixed optics but lighting and sensor noise vary; defect shapes stay rigid.
    "industrial": AugmentSettings(
        affine_p=0.3, scale=(0.9, 1.1), rotate=10.0, intensity_p=0.6, brightness=0.25, contrast=0.25,
        gamma=(0.7, 1.4), noise_p=0.3, noise_std=(0.0, 0.04), blur_p=0.2,
    ),
}  # fmt: skip


def choose_preset(fingerprint: DataFingerprint) -> str:
    """Pick an augmentation preset from simple facts about a dataset.

    Args:
        fingerprint: the dataset's ``spatial_dims`` and ``channels`` (the largest value seen is used; none
            recorded: 2D, 1 channel), ``sizes.median`` (median spatial shape, e.g. ``[H, W]``), ``georeferenced``
            (images carry a CRS) and ``has_roi`` (a region-of-interest / field-of-view mask is given).

    Returns:
        The first rule that matches:

        1. volumes (``spatial_dims == 3``) -> ``medical``;
        2. georeferenced, or more than 4 channels (multispectral) -> ``aerial``;
        3. colour with an ROI mask (fundus photos with a field of view) -> ``medical``;
        4. colour with a median long side >= 768 px (large scenes) -> ``aerial``;
        5. grey, square-ish (aspect <= 1.25) and >= 384 px a side (EM / microscopy fields)
           -> ``microscopy``;
        6. grey with a median long side <= 640 px (inspection crops) -> ``industrial``;
        7. otherwise -> ``default``.

        On the bundled datasets: ISBI EM -> microscopy, DRIVE with its FOV masks -> medical,
        Dubai aerial -> aerial, magnetic tiles -> industrial, hippocampus MRI -> medical.
    """
    dims = max(fingerprint.spatial_dims, default=2)
    channels = max(fingerprint.channels, default=1)
    if dims == 3:
        return "medical"
    if fingerprint.georeferenced or channels > 4:
        return "aerial"
    size = [float(s) for s in fingerprint.sizes.median][-2:]
    if len(size) < 2 or min(size) <= 0:
        return "default"
    short, long = min(size), max(size)
    if channels >= 3:
        if fingerprint.has_roi:
            return "medical"
        return "aerial" if long >= 768 else "default"
    if long / short <= 1.25 and short >= 384:
        return "microscopy"
    if long <= 640:
        return "industrial"
    return "default"


def build_augmentation(
    preset: str,
    *,
    patch_size: tuple[int, ...],
    seed: int | None = None,
    ignore_index: int = 255,
) -> Augmentation:
    """A paired augmentation for patches of ``patch_size`` (2 values: 2D, 3 values: 3D).

    Args:
        preset: one of :data:`PRESETS`.
        patch_size: spatial size of the patches it will mostly see; picks 2D or 3D and pre-builds
            the pipeline. Other sizes work too (parameters scale with the actual size).
        seed: seeds the generator used when a call passes no ``rng``.
        ignore_index: mask value for pixels brought in from outside the image.

    Returns:
        An :class:`Augmentation`: ``aug(image, mask, rng) -> (image, mask)``.

    Raises:
        ValueError: unknown preset or a patch size that is not 2 or 3 positive ints.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown augmentation preset {preset!r}; choose one of {', '.join(PRESETS)}")
    size = tuple(int(s) for s in patch_size)
    if len(size) not in (2, 3) or min(size) <= 0:
        raise ValueError(f"patch_size must be 2 or 3 positive sizes, got {patch_size!r}")
    settings = None if preset == "none" else PRESET_SETTINGS[preset]
    return Augmentation(
        preset=preset, settings=settings, patch_size=size, seed=seed, ignore_index=ignore_index
    )


class Augmentation:
    """Callable paired augmentation (see :func:`build_augmentation`).

    Reseeds its albumentations pipeline on every call, so one instance must not be shared by
    threads running at the same time (data-loader worker processes each get their own copy).
    """

    def __init__(
        self,
        *,
        preset: str,
        settings: AugmentSettings | None,
        patch_size: tuple[int, ...],
        seed: int | None,
        ignore_index: int,
    ) -> None:
        self.preset = preset
        self.settings = settings
        self.patch_size = patch_size
        self.spatial_dims = len(patch_size)
        self.ignore_index = int(ignore_index)
        self._default_rng = np.random.default_rng(seed)
        self._pipelines: dict[tuple[int, int], Any] = {}
        if settings is not None and self.spatial_dims == 2:
            self._pipeline(patch_size)  # fail early if albumentations is missing or misconfigured

    def __call__(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        rng: np.random.Generator | None = None,
        *,
        roi: np.ndarray | None = None,
    ) -> tuple[np.ndarray, ...]:
        """Augment one image / mask pair (and ROI) with the same random geometry.

        Args:
            image: ``(C, H, W)`` or ``(C, D, H, W)`` float image.
            mask: ``(H, W)`` / ``(D, H, W)`` non-negative integer labels.
            rng: source of randomness (exactly one integer is drawn from it); ``None`` uses the
                augmentation's own generator seeded by ``seed``.
            roi: optional ``(H, W)`` / ``(D, H, W)`` boolean region of interest, moved like the mask.

        Returns:
            ``(image float32, mask int64)`` or, with ``roi``, ``(image, mask, roi bool)``.

        Raises:
            ValueError: shapes that do not match each other or the preset's dimensionality,
                negative labels, or labels too large to resample.
        """
        img, msk, region = self._check(image, mask, roi)
        seed = int((rng if rng is not None else self._default_rng).integers(0, 2**63 - 1))
        if self.settings is not None:
            if self.spatial_dims == 2:
                img, msk, region = self._apply_2d(img, msk, region, seed)
            else:
                img, msk, region = _augment_3d(img, msk, region, self.settings, np.random.default_rng(seed))
        out_mask = msk.astype(np.int64)
        if region is None:
            return img.astype(np.float32, copy=False), out_mask
        return img.astype(np.float32, copy=False), out_mask, region.astype(bool)

    def _check(
        self, image: np.ndarray, mask: np.ndarray, roi: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        img = np.asarray(image, dtype=np.float32)
        msk = np.asarray(mask)
        if img.ndim != self.spatial_dims + 1:
            raise ValueError(
                f"{self.spatial_dims}D augmentation expects an image (C, {'D, ' * (self.spatial_dims == 3)}H, W), "
                f"got shape {img.shape}"
            )
        if msk.shape != img.shape[1:]:
            raise ValueError(f"mask shape {msk.shape} does not match image spatial shape {img.shape[1:]}")
        if not np.issubdtype(msk.dtype, np.integer) and msk.dtype != bool:
            raise ValueError(f"mask must hold integer labels, got {msk.dtype}")
        if msk.size and msk.min() < 0:
            raise ValueError(f"mask labels must be >= 0, got {msk.min()}")
        if roi is not None and np.shape(roi) != msk.shape:
            raise ValueError(f"roi shape {np.shape(roi)} does not match mask shape {msk.shape}")
        region = None if roi is None else np.asarray(roi).astype(bool)
        return img, msk, region

    def _pipeline(self, shape: tuple[int, ...]) -> Any:
        key = (int(shape[0]), int(shape[1]))
        if key not in self._pipelines:
            assert self.settings is not None
            self._pipelines[key] = _compose_2d(self.settings, shape=key, ignore_index=self.ignore_index)
        return self._pipelines[key]

    def _apply_2d(
        self, img: np.ndarray, msk: np.ndarray, region: np.ndarray | None, seed: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        compose = self._pipeline(img.shape[1:])
        # One shared generator pair for every op: independent draws, fully fixed by ``seed``.
        compose.set_random_state(np.random.default_rng(seed), random.Random(seed))
        unit, lo, span = _to_unit(img)
        mask_store = _mask_storage_dtype(max(int(msk.max(initial=0)), self.ignore_index))
        targets: dict[str, np.ndarray] = {
            "image": np.ascontiguousarray(np.moveaxis(unit, 0, -1)),
            "mask": msk.astype(mask_store),
        }
        if region is not None:
            targets["roi"] = region.astype(np.uint8)
        out = compose(**targets)
        channels, height, width = img.shape
        new_img = np.moveaxis(out["image"].reshape(height, width, channels), -1, 0)
        new_region = None if region is None else out["roi"] == 1  # filled pixels (ignore_index) -> False
        return _from_unit(new_img, lo, span), out["mask"], new_region


def _mask_storage_dtype(max_value: int) -> type:
    # OpenCV warps uint8 / uint16 masks but not int64.
    if max_value <= np.iinfo(np.uint8).max:
        return np.uint8
    if max_value <= np.iinfo(np.uint16).max:
        return np.uint16
    raise ValueError(f"mask labels up to {max_value} cannot be augmented (at most 65535)")


def _to_unit(img: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rescale each channel to [0, 1]; returns ``(unit, lo, span)`` to undo it."""
    axes = tuple(range(1, img.ndim))
    lo = img.min(axis=axes, keepdims=True)
    span = img.max(axis=axes, keepdims=True) - lo
    span = np.where(span > 0, span, 1.0).astype(np.float32)
    return ((img - lo) / span).astype(np.float32), lo, span


def _from_unit(unit: np.ndarray, lo: np.ndarray, span: np.ndarray) -> np.ndarray:
    return (unit * span + lo).astype(np.float32)


def _compose_2d(settings: AugmentSettings, *, shape: tuple[int, int], ignore_index: int) -> Any:
    """The albumentations pipeline for ``settings`` on patches of ``shape``."""
    import albumentations as A
    import cv2

    s = settings
    side = float(min(shape))
    geometric = {
        "interpolation": cv2.INTER_LINEAR,
        "mask_interpolation": cv2.INTER_NEAREST,  # labels are copied, never blended
        "border_mode": cv2.BORDER_CONSTANT,
        "fill": 0.0,
        "fill_mask": ignore_index,  # pixels from outside the image are "not labelled"
    }
    ops: list[Any] = []
    if s.flips:
        ops += [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)]
    if s.rot90 and shape[0] == shape[1]:  # a quarter turn would change a non-square shape
        ops.append(A.RandomRotate90(p=0.75))
    if s.affine_p > 0:
        ops.append(
            A.Affine(
                scale=s.scale,
                rotate=(-s.rotate, s.rotate),
                translate_percent=(-s.shift, s.shift),
                p=s.affine_p,
                **geometric,
            )
        )
    if s.elastic_p > 0:
        sigma = max(2.0, s.elastic_sigma * side)
        alpha = s.elastic_disp * side * sigma / _SMOOTHED_NOISE_STD
        ops.append(
            A.ElasticTransform(
                alpha=alpha, sigma=sigma, noise_distribution="uniform", p=s.elastic_p, **geometric
            )
        )
    ops += _intensity_ops(s)
    return A.Compose(ops, additional_targets={"roi": "mask"})


def _intensity_ops(s: AugmentSettings) -> list[Any]:
    import albumentations as A

    ops: list[Any] = []
    if s.intensity_p > 0:
        ops.append(
            A.RandomBrightnessContrast(
                brightness_limit=s.brightness,
                contrast_limit=s.contrast,
                brightness_by_max=True,
                p=s.intensity_p,
            )
        )
    if s.gamma_p > 0:
        ops.append(A.RandomGamma(gamma_limit=(100 * s.gamma[0], 100 * s.gamma[1]), p=s.gamma_p))
    if s.noise_p > 0:
        ops.append(A.GaussNoise(std_range=s.noise_std, p=s.noise_p))
    if s.blur_p > 0:
        ops.append(A.GaussianBlur(sigma_limit=s.blur_sigma, blur_limit=0, p=s.blur_p))
    return ops


def _augment_3d(
    img: np.ndarray,
    msk: np.ndarray,
    region: np.ndarray | None,
    s: AugmentSettings,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Numpy augmentation of ``(C, D, H, W)`` volumes: flips, in-plane rot90, intensity, noise.

    No interpolation is involved, so labels are only ever moved, never resampled.
    """
    arrays = [img, msk[np.newaxis]] + ([] if region is None else [region[np.newaxis]])
    if s.flips:
        for axis in (1, 2, 3):
            if rng.random() < 0.5:
                arrays = [np.flip(a, axis=axis) for a in arrays]
    if s.rot90 and img.shape[2] == img.shape[3]:
        k = int(rng.integers(4))
        arrays = [np.rot90(a, k=k, axes=(2, 3)) for a in arrays]
    unit, lo, span = _to_unit(arrays[0])
    if rng.random() < s.intensity_p:
        gain = rng.uniform(1 - s.contrast, 1 + s.contrast)
        offset = rng.uniform(-s.brightness, s.brightness)
        unit = np.clip(unit * gain + offset, 0.0, 1.0)
    if rng.random() < s.gamma_p:
        unit = unit ** rng.uniform(*s.gamma)
    if rng.random() < s.noise_p:
        unit = np.clip(unit + rng.normal(0.0, rng.uniform(*s.noise_std), size=unit.shape), 0.0, 1.0)
    image = _from_unit(unit.astype(np.float32), lo, span)
    region_out = None if region is None else np.ascontiguousarray(arrays[2][0])
    return np.ascontiguousarray(image), np.ascontiguousarray(arrays[1][0]), region_out
