"""Load discovered samples as arrays: float32 images and int64 class-index masks.

Images keep their raw intensities (``unetkit.data.normalize.normalize`` is applied later by the trainer);
palette images become RGB and alpha channels are dropped (transparency is not a signal). Masks are encoded
by :func:`unetkit.data.masks.encode_mask`, with ``ignore_index`` outside the ROI.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unetkit.data._raw import read_image_array, read_mask_array
from unetkit.data.discovery import Sample
from unetkit.data.masks import apply_roi, encode_mask, encode_multilabel, is_colour
from unetkit.data.options import DataConfig

__all__ = ["LoadedSample", "assemble_sample", "load_sample", "load_samples", "read_sample_image"]

# Pillow modes whose last channel is alpha.
_ALPHA_MODES = {"LA", "RGBA", "PA", "RGBA;16"}


@dataclass
class LoadedSample:
    """A sample in memory.

    Attributes:
        key / group / folder: as in :class:`unetkit.data.discovery.Sample`.
        image: float32 ``(C, H, W)`` or ``(C, D, H, W)``, raw intensities.
        mask: int64 ``(H, W)`` / ``(D, H, W)`` class indices with ``ignore_index``, or ``(K, ...)`` {0, 1}
            for multi-label data; ``None`` for unlabelled samples.
        meta: the image reader's metadata plus ``dtype`` (stored image dtype), ``image_files``,
            ``mask_file`` and ``roi_file``.
    """

    key: str
    image: np.ndarray
    mask: np.ndarray | None
    group: str = ""
    folder: str = "."
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.image.shape[1:])


def load_samples(samples: Sequence[Sample], config: DataConfig) -> list[LoadedSample]:
    """Load every sample (see :func:`load_sample`)."""
    return [load_sample(s, config) for s in samples]


def load_sample(sample: Sample, config: DataConfig) -> LoadedSample:
    """Read a sample's image, mask and ROI.

    Returns:
        :class:`LoadedSample` (float32 image, int64 mask).

    Raises:
        ValueError: unreadable file, image/mask/ROI sizes differ (names both files and sizes), channel files
            of different sizes, or a mask the encoding rejects (see :func:`unetkit.data.masks.encode_mask`).
        FileNotFoundError: a file vanished since discovery.
    """
    image, meta = read_sample_image(sample)
    spatial = image.shape[1:]
    mask = read_sample_mask(sample, config, spatial=spatial) if sample.mask is not None else None
    return assemble_sample(sample, image, meta, mask)


def assemble_sample(
    sample: Sample, image: np.ndarray, meta: dict[str, Any], mask: np.ndarray | None
) -> LoadedSample:
    """The :class:`LoadedSample` of ``sample`` from its decoded image (stored dtype) and encoded mask: what
    :func:`load_sample` returns, for a reader (the dataset check) that decoded them itself."""
    meta.update(
        image_files=[str(p) for p in sample.image_paths],
        mask_file=None if sample.mask is None else [str(p) for p in sample.mask_paths],
        roi_file=None if sample.roi is None else str(sample.roi),
    )
    return LoadedSample(
        sample.key, image.astype(np.float32, copy=False), mask, sample.group, sample.folder, meta
    )


def read_sample_image(sample: Sample) -> tuple[np.ndarray, dict[str, Any]]:
    """The image in its stored dtype, ``(C, *spatial)``; channel files are stacked in order.

    Returns:
        ``(array, meta)``; ``meta["dtype"]`` is the stored dtype.
    """
    arrays: list[np.ndarray] = []
    meta: dict[str, Any] = {}
    for path in sample.image_paths:
        array, m = read_image_array(path)
        array = _drop_alpha(_resolve_palette(array, m), m)
        if arrays and array.shape[1:] != arrays[0].shape[1:]:
            raise ValueError(
                f"channel files of {sample.key!r} differ in size: {sample.image_paths[0]} is "
                f"{_size(arrays[0].shape[1:])}, {path} is {_size(array.shape[1:])}"
            )
        arrays.append(array)
        meta = meta or m
    image = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)
    meta = {k: v for k, v in meta.items() if k != "header"}  # nibabel header: not needed, not serialisable
    meta["dtype"] = str(image.dtype)
    return image, meta


def read_sample_mask(sample: Sample, config: DataConfig, *, spatial: Sequence[int]) -> np.ndarray:
    """Encode the sample's mask (and ROI) for an image of spatial shape ``spatial``.

    Raises:
        ValueError: size mismatch (naming the image, the mask and both sizes) or a rejected encoding.
    """
    spatial = tuple(spatial)
    resolve = bool(config.colour_table)
    if isinstance(sample.mask, list):
        layers = [None if p is None else read_mask_array(p, resolve_palette=False) for p in sample.mask]
        for p, layer in zip(sample.mask, layers, strict=True):
            if p is not None and layer is not None:  # a layer is read exactly where a path is given
                _check_size(sample, p, layer, spatial)
        mask = encode_multilabel(layers, spatial, config)
    else:
        assert sample.mask is not None
        raw = read_mask_array(sample.mask, resolve_palette=resolve)
        _check_size(sample, sample.mask, raw, spatial)
        mask = encode_mask(raw, config, source=str(sample.mask), spatial_ndim=len(spatial))
    if sample.roi is not None:
        roi = read_mask_array(sample.roi, resolve_palette=False)
        _check_size(sample, sample.roi, roi, spatial, what="ROI")
        mask = apply_roi(mask, roi, ignore_index=config.ignore_index, source=str(sample.roi))
    return mask


def mask_spatial_shape(raw: np.ndarray, n_spatial: int) -> tuple[int, ...]:
    """Spatial shape of a raw mask: ``(H, W, 3)`` colour masks lose their colour axis."""
    if is_colour(raw, n_spatial):
        return tuple(raw.shape[:-1])
    return tuple(raw.shape)


def _check_size(
    sample: Sample, path: Path, raw: np.ndarray, spatial: tuple[int, ...], what: str = "mask"
) -> None:
    shape = mask_spatial_shape(raw, len(spatial))
    if shape != spatial:
        raise ValueError(
            f"size mismatch: image {sample.image_paths[0]} is {_size(spatial)} but {what} {path} is "
            f"{_size(shape)} ({_axes(len(spatial))})"
        )


def _resolve_palette(array: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    """Palette *images* (not masks) become RGB through their colour table."""
    if meta.get("mode") not in ("P", "PA") or not meta.get("palette"):
        return array
    palette = np.zeros((256, 3), dtype=np.uint8)
    table = np.asarray(meta["palette"], dtype=np.uint8)[:256]
    palette[: len(table)] = table
    rgb = palette[array[0]]  # (H, W, 3)
    return np.moveaxis(rgb, -1, 0)


def _drop_alpha(array: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    if meta.get("mode") in _ALPHA_MODES and array.shape[0] in (2, 4):
        return array[:-1]
    return array


def _size(shape: Sequence[int]) -> str:
    return "x".join(str(int(s)) for s in shape)


def _axes(n: int) -> str:
    return "height x width" if n == 2 else "voxels per axis, as stored"
