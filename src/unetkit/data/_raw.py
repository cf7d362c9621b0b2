"""Raw readers for the dataset layer: images through :func:`unetkit.data.io.read_image`, and masks.

Masks need their own reader because palette PNG/GIF masks are ambiguous: with a colour table the palette is
resolved to RGB (the colours are the classes); without one the palette *indices* are the stored classes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from unetkit.data.io import SUPPORTED_SUFFIXES, read_image

# Extensions the dataset layer treats as images/masks (what read_image reads); other files are ignored.
IMAGE_SUFFIXES = tuple(SUPPORTED_SUFFIXES)
VOLUME_SUFFIXES = (".nii.gz", ".nii")
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
    name = path.name.lower()
    return not name.startswith(".") and name.endswith(IMAGE_SUFFIXES) and path.is_file()


def is_volume(path: Path) -> bool:
    return split_name(path)[1] in VOLUME_SUFFIXES


def read_image_array(path: Path) -> tuple[np.ndarray, dict]:
    """Read an image as ``(C, H, W)`` / ``(C, D, H, W)`` in its native dtype, plus metadata.

    A thin wrapper of :func:`unetkit.data.io.read_image`, so that images and volume masks share one reader
    (and one axis convention: NIfTI stays ``(C, X, Y, Z)``).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file cannot be decoded (truncated, corrupt, unsupported).
    """
    data = read_image(path)
    return np.asarray(data.array), dict(data.meta)


def read_mask_array(path: Path, *, resolve_palette: bool) -> np.ndarray:
    """Read a mask without interpreting its values (its own reader: palette handling differs from images).

    Args:
        path: mask file (PNG/GIF/BMP/JPEG/TIFF/NIfTI).
        resolve_palette: for palette images, True converts to RGB (colour-coded masks, used when a colour
            table is given); False keeps the palette indices (masks that store class indices in a palette).

    Returns:
        ``(H, W)`` or ``(D, H, W)`` for single-channel masks, ``(H, W, 3)`` for colour masks; native dtype.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file cannot be decoded (truncated, corrupt) or has an unusable channel count.
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
    try:
        with Image.open(path) as im:
            im.load()  # decode now: a truncated file fails here
            return _pil_mask_to_array(im, resolve_palette=resolve_palette)
    except (OSError, SyntaxError, EOFError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f"{path}: unreadable mask ({type(err).__name__}: {err})") from err


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
