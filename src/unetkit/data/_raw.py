"""Raw readers for the dataset layer: images (until ``unetkit.data.io`` lands) and masks.

Masks need their own reader because palette PNG/GIF masks are ambiguous: with a colour table the palette is
resolved to RGB (the colours are the classes); without one the palette *indices* are the stored classes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# Extensions the dataset layer treats as images/masks; anything else in a data folder is ignored.
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".bmp", ".webp")
VOLUME_SUFFIXES = (".nii.gz", ".nii")
IMAGE_SUFFIXES = RASTER_SUFFIXES + VOLUME_SUFFIXES
# Multi-part suffixes removed as a whole when computing a file's stem.
_MULTI_SUFFIXES = (".nii.gz", ".ome.tiff", ".ome.tif")


def split_name(path: Path) -> tuple[str, str]:
    """``(stem, suffix)`` with multi-part suffixes such as ``.nii.gz`` kept together (lower-case suffix)."""
    lower = path.name.lower()
    for suffix in _MULTI_SUFFIXES:
        if lower.endswith(suffix) and len(lower) > len(suffix):
            return path.name[: -len(suffix)], suffix
    return path.stem, path.suffix.lower()


def is_data_file(path: Path) -> bool:
    """True for a visible file whose extension is a supported image/volume format."""
    return path.is_file() and not path.name.startswith(".") and split_name(path)[1] in IMAGE_SUFFIXES


def is_volume(path: Path) -> bool:
    return split_name(path)[1] in VOLUME_SUFFIXES


def read_image_array(path: Path) -> tuple[np.ndarray, dict]:
    """Read an image as ``(C, H, W)`` / ``(C, D, H, W)`` in its native dtype, plus metadata.

    Delegates to :func:`unetkit.data.io.read_image` so that images and volume masks share one reader (and
    one axis convention).

    Raises:
        FileNotFoundError: the file does not exist.
        OSError / ValueError: the file cannot be decoded (truncated, corrupt, unsupported).
    """
    try:
        from unetkit.data.io import read_image
    except ModuleNotFoundError:  # TEMPORARY until unetkit.data.io lands
        return _fallback_read(Path(path))
    data = read_image(path)
    return np.asarray(data.array), dict(data.meta)


def _fallback_read(path: Path) -> tuple[np.ndarray, dict]:
    if not path.exists():
        raise FileNotFoundError(f"image file not found: {path}")
    if is_volume(path):
        import nibabel as nib

        img = nib.load(str(path))
        vol = np.asarray(img.dataobj)
        # nibabel gives (X, Y, Z); use (D, H, W) = (Z, Y, X).
        arr = vol.transpose(2, 1, 0)[None] if vol.ndim == 3 else np.moveaxis(vol.transpose(2, 1, 0, 3), -1, 0)
        return arr, {"spacing": [float(z) for z in img.header.get_zooms()[:3]][::-1]}
    with Image.open(path) as im:
        im.load()
        arr = np.asarray(im.convert("RGB") if im.mode in ("P", "PA", "RGBA", "CMYK", "YCbCr") else im)
    arr = arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)
    return arr, {}


def read_mask_array(path: Path, *, resolve_palette: bool) -> np.ndarray:
    """Read a mask without interpreting its values.

    Args:
        path: mask file (PNG/GIF/BMP/JPEG/TIFF/NIfTI).
        resolve_palette: for palette images, True converts to RGB (colour-coded masks, used when a colour
            table is given); False keeps the palette indices (masks that store class indices in a palette).

    Returns:
        ``(H, W)`` or ``(D, H, W)`` for single-channel masks, ``(H, W, 3)`` for colour masks; native dtype.

    Raises:
        FileNotFoundError: the file does not exist.
        OSError / ValueError: the file cannot be decoded.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"mask file not found: {path}")
    suffix = split_name(path)[1]
    if suffix in VOLUME_SUFFIXES or suffix in (".tif", ".tiff"):
        array, _ = read_image_array(path)
        # Channel-first from the shared reader; one channel -> drop it, three -> channel-last colour.
        if array.shape[0] == 1:
            return array[0]
        if array.shape[0] in (3, 4) and array.ndim == 3:
            return np.moveaxis(array[:3], 0, -1)
        raise ValueError(f"{path}: a mask must have 1 or 3 channels, this one has shape {array.shape}")
    with Image.open(path) as im:
        im.load()
        return _pil_mask_to_array(im, resolve_palette=resolve_palette)


def _pil_mask_to_array(im: Image.Image, *, resolve_palette: bool) -> np.ndarray:
    mode = im.mode
    if mode in ("P", "PA"):
        if resolve_palette:
            return np.asarray(im.convert("RGB"))
        return np.asarray(im.convert("P") if mode == "PA" else im)
    if mode == "1":
        return np.asarray(im, dtype=np.uint8)
    if mode == "LA":
        return np.asarray(im.convert("L"))
    if mode in ("RGBA", "CMYK", "YCbCr", "LAB", "HSV"):
        # Alpha is transparency, not a label; drop it.
        return np.asarray(im.convert("RGB"))
    return np.asarray(im)
