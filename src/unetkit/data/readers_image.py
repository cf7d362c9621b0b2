"""Readers and writers for plain raster images: PNG, JPEG, GIF, BMP (Pillow) and TIFF (tifffile).

All readers return channels-first arrays in the file's own dtype: ``(C, H, W)`` for a single image,
``(C, D, H, W)`` for a multi-page TIFF stack. Palette images return their palette *indices*
(what a label mask stores) with the palette itself in ``meta["palette"]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from unetkit.data import _common
from unetkit.data._common import atomic_target, to_channels_first, too_large, unreadable

PILLOW_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp")
TIFF_SUFFIXES = (".tif", ".tiff")

# Pillow modes returned as they are (array dtype follows the mode).
_NATIVE_MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "I;16", "I;16B", "I;16L", "I", "F"}
# TIFF axes letters (tifffile's naming) that mean "channel"; other non-YX axes become depth.
_CHANNEL_AXES = "SC"


def read_pillow(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a PNG / JPEG / GIF / BMP (or a TIFF Pillow can decode) completely.

    Returns:
        ``(array, meta)``: array ``(C, H, W)`` in the file's dtype (uint8; uint16 for 16-bit grey
        and 16-bit colour PNG; int32 / float32 for Pillow modes ``I`` / ``F``); meta has ``format``,
        ``mode`` (Pillow mode as stored), ``dtype``, and where relevant ``palette`` (list of RGB
        triples), ``n_frames`` (only the first frame is read) and ``exif_orientation`` (pixels are
        NOT rotated: masks drawn on the stored pixels must stay aligned).

    Raises:
        ValueError: truncated, corrupt or unsupported file (message names the file).
    """
    path = Path(path)
    if path.suffix.lower() == ".png" and _png_is_16bit_colour(path):
        return _read_png16_colour(path)
    try:
        with Image.open(path) as im:
            im.load()  # decode now: truncated files fail here, not later
            meta = _pillow_meta(im)
            if im.mode not in _NATIVE_MODES:
                # CMYK / YCbCr / LAB / HSV: segmentation models expect RGB.
                im = im.convert("RGB")
            array = np.array(im)
    except Image.DecompressionBombError as err:
        raise too_large(path, err) from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise unreadable(path, err) from err
    if array.dtype == bool:  # mode "1"
        array = array.astype(np.uint8)
    if array.ndim == 3:
        array = np.moveaxis(array, -1, 0)
    array = np.ascontiguousarray(to_channels_first(array, path=path))
    meta["dtype"] = str(array.dtype)
    return array, meta


def _pillow_meta(im: Image.Image) -> dict[str, Any]:
    meta: dict[str, Any] = {"format": (im.format or "unknown").lower(), "mode": im.mode}
    if im.mode in ("P", "PA"):
        flat = im.getpalette() or []
        meta["palette"] = [tuple(flat[i : i + 3]) for i in range(0, len(flat) - 2, 3)]
    frames = getattr(im, "n_frames", 1)
    if frames > 1:
        meta["n_frames"] = int(frames)
    orientation = im.getexif().get(0x0112)  # EXIF Orientation tag
    if orientation not in (None, 1):
        meta["exif_orientation"] = int(orientation)
    return meta


def _png_is_16bit_colour(path: Path) -> bool:
    """True for 16-bit RGB / RGBA PNGs, which Pillow silently reduces to 8 bits."""
    with open(path, "rb") as fh:
        head = fh.read(26)
    # Signature (8) + IHDR length (4) + "IHDR" (4) + width (4) + height (4) + bit depth + colour type.
    if len(head) < 26 or head[12:16] != b"IHDR":
        return False
    if head[24] != 16 or head[25] not in (2, 6):
        return False
    # OpenCV decodes these, and has no limit as tight as Pillow's: refuse a huge declared size from the header.
    pixels = int.from_bytes(head[16:20], "big") * int.from_bytes(head[20:24], "big")
    limit = 2 * (Image.MAX_IMAGE_PIXELS or pixels)
    if pixels > limit:
        bomb = Image.DecompressionBombError(f"Image size ({pixels} pixels) exceeds limit of {limit} pixels")
        raise too_large(path, bomb)
    return True


def _read_png16_colour(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    import cv2  # only needed for this rare case

    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None or array.ndim != 3:
        raise ValueError(f"{path}: unreadable image (OpenCV could not decode a 16-bit colour PNG)")
    # OpenCV returns BGR(A); reorder to RGB(A).
    order = [2, 1, 0, 3][: array.shape[2]]
    array = np.ascontiguousarray(np.moveaxis(array[..., order], -1, 0))
    mode = "RGB;16" if array.shape[0] == 3 else "RGBA;16"
    return array, {"format": "png", "mode": mode, "dtype": str(array.dtype)}


def read_tiff(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a whole (non-geo) TIFF with tifffile: any dtype, any number of bands, multi-page stacks.

    Layout: sample / channel axes go first; any other non-spatial axes (pages, Z, time) are
    flattened into a depth axis, giving ``(C, D, H, W)``; single-page images give ``(C, H, W)``.
    Falls back to Pillow if tifffile cannot decode the file (e.g. an exotic compression).

    Raises:
        ValueError: truncated, corrupt or unsupported file (message names the file).
    """
    import tifffile

    path = Path(path)
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            _common.check_decoded_size(path, tuple(series.shape), series.dtype.itemsize)
            raw = series.asarray()
            axes = series.axes
            page = tif.pages[0]
            meta: dict[str, Any] = {
                "format": "tiff",
                "axes": axes,
                "photometric": page.photometric.name.lower(),
                "compression": page.compression.name.lower(),
            }
    except (FileNotFoundError, _common.DecodeLimitError):
        raise
    except (KeyError, NotImplementedError) as err:
        # tifffile lacks a codec (e.g. LZW / JPEG without the optional imagecodecs package):
        # Pillow decodes the common 8-bit grey / RGB cases itself.
        try:
            array, meta = read_pillow(path)
        except ValueError:
            raise unreadable(path, err) from err
        meta["format"] = "tiff"
        return array, meta
    except Exception as err:  # noqa: BLE001 - decoders raise many unrelated types; all mean "unreadable"
        raise unreadable(path, err) from err
    array = _tiff_channels_first(raw, axes, path=path)
    meta["dtype"] = str(array.dtype)
    return array, meta


def _tiff_layout(shape: tuple[int, ...], axes: str, *, path: Path) -> tuple[list[int], tuple[int, ...]]:
    """Axis order and final channels-first shape for a tifffile series of ``shape`` / ``axes``."""
    if len(axes) != len(shape) or "Y" not in axes or "X" not in axes:
        raise ValueError(f"{path}: unreadable image (unsupported TIFF axes {axes!r} for shape {shape})")
    chan = [i for i, a in enumerate(axes) if a in _CHANNEL_AXES]
    space = [axes.index("Y"), axes.index("X")]
    other = [i for i in range(len(shape)) if i not in chan and i not in space]
    n_chan = int(np.prod([shape[i] for i in chan])) if chan else 1
    out: tuple[int, ...] = (n_chan,)
    if other:
        out += (int(np.prod([shape[i] for i in other])),)
    return chan + other + space, out + (shape[space[0]], shape[space[1]])


def _tiff_channels_first(raw: np.ndarray, axes: str, *, path: Path) -> np.ndarray:
    order, shape = _tiff_layout(raw.shape, axes, path=path)
    return np.ascontiguousarray(np.transpose(raw, order).reshape(shape))


def tiff_shape(path: str | Path) -> tuple[int, ...]:
    """Channels-first shape :func:`read_tiff` would return, from the TIFF header only."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            return _tiff_layout(tuple(series.shape), series.axes, path=Path(path))[1]
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 - any header failure means "unreadable"
        raise unreadable(path, err) from err


def pillow_shape(path: str | Path) -> tuple[int, int, int]:
    """Channels-first shape :func:`read_pillow` would return, without decoding pixels."""
    try:
        with Image.open(path) as im:
            bands = len(im.getbands()) if im.mode in _NATIVE_MODES else 3
            if im.mode == "P":
                bands = 1
            return bands, im.size[1], im.size[0]
    except FileNotFoundError:
        raise
    except Image.DecompressionBombError as err:
        raise too_large(path, err) from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise unreadable(path, err) from err


def tiff_is_georeferenced(path: str | Path) -> bool:
    """True when the TIFF carries GeoTIFF tags (model tie-points / transformation / geo-keys)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return bool(tif.pages[0].is_geotiff)
    except FileNotFoundError:
        raise
    except Exception:  # noqa: BLE001 - a broken header is reported by the real reader
        return False


def write_png(path: str | Path, array: np.ndarray, *, meta: dict[str, Any] | None = None) -> None:
    """Write ``(C, H, W)`` / ``(H, W)`` uint8 (1-4 channels) or uint16 grey as PNG, atomically.

    A single-channel uint8 array with ``meta["mode"] == "P"`` and a ``meta["palette"]`` is written
    as a palette PNG (indices kept, colours from the palette), so masks keep their encoding.

    Raises:
        ValueError: unsupported dtype / channel count.
    """
    arr = to_channels_first(np.asarray(array), path=path)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    channels = arr.shape[0]
    if arr.dtype == np.uint16 and channels == 1:
        image = Image.fromarray(arr[0])
    elif arr.dtype == np.uint8 and channels in (1, 2, 3, 4):
        image = Image.fromarray(arr[0] if channels == 1 else np.moveaxis(arr, 0, -1))
    else:
        raise ValueError(
            f"{path}: PNG holds uint8 with 1-4 channels or uint16 grey, got {channels} channel(s) "
            f"of {arr.dtype}; write a .tif instead"
        )
    palette = (meta or {}).get("palette")
    if (meta or {}).get("mode") == "P" and palette and channels == 1 and arr.dtype == np.uint8:
        image = image.convert("L")
        image.putpalette([int(v) for rgb in palette for v in rgb])  # putpalette turns L into P
    with atomic_target(path) as tmp:
        image.save(tmp, format="PNG")


def write_tiff(path: str | Path, array: np.ndarray) -> None:
    """Write ``(C, H, W)`` / ``(H, W)`` of any dtype as a lossless (deflate) TIFF, atomically.

    3- or 4-channel uint8/uint16 arrays are stored as interleaved RGB(A) (what image viewers
    expect); anything else as separate grey planes. :func:`read_tiff` gives back the same array.
    """
    import tifffile

    arr = to_channels_first(np.asarray(array), path=path)
    rgb = arr.shape[0] in (3, 4) and arr.dtype in (np.uint8, np.uint16)
    with atomic_target(path) as tmp:
        if rgb:
            extras = ["unassalpha"] if arr.shape[0] == 4 else None
            tifffile.imwrite(
                tmp, np.moveaxis(arr, 0, -1), photometric="rgb", extrasamples=extras, compression="zlib"
            )
        elif arr.shape[0] == 1:
            tifffile.imwrite(tmp, arr[0], photometric="minisblack", compression="zlib")
        else:
            tifffile.imwrite(tmp, arr, photometric="minisblack", planarconfig="separate", compression="zlib")
