"""One entry point for reading and writing every image format unetkit accepts: a format registry.

:data:`FORMATS` lists each format with its suffixes, the leading bytes that identify its files, and its
reader, shape reader and writer; :func:`format_for` picks the format of a path by its suffix and
:func:`sniff_format` by its first bytes (a file that fails to decode and whose bytes say it is another format
gets an error saying so). ``read_image``, ``image_shape`` and ``write_image`` all go through the table:

===================  ==========================================  ==============================
suffix               reader                                      array layout
===================  ==========================================  ==============================
.png .jpg .jpeg      Pillow (:mod:`unetkit.data.readers_image`)  ``(C, H, W)``
.gif .bmp
.tif .tiff           GeoTIFF -> rasterio (:mod:`.geotiff`);      ``(C, H, W)``; multi-page
                     otherwise tifffile                          stacks ``(C, D, H, W)``
.nii .nii.gz         nibabel (:mod:`unetkit.data.nifti`)         ``(C, X, Y, Z)``
===================  ==========================================  ==============================

Arrays keep the file's dtype (uint8, uint16, float32 ...); normalisation happens later. ``meta``
always has ``format`` and ``dtype`` plus the geometry needed to write a result back in place
(NIfTI affine + header, GeoTIFF CRS + transform + nodata, palette of palette images).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unetkit.data import geotiff, nifti, readers_image
from unetkit.data._common import Window as Window  # public here: a pixel window of a raster
from unetkit.data._common import check_window
from unetkit.data._common import full_suffix as full_suffix  # public here: a file's format suffix


@dataclass(frozen=True)
class ImageFormat:
    """One readable format.

    Attributes:
        name: what the format is called in messages (``PNG``, ``TIFF`` ...).
        suffixes: lower-case file suffixes (``.nii.gz`` counts as one).
        signatures: ``(offset, bytes)`` pairs; a file whose bytes at ``offset`` equal one of them is this format.
        read: ``(path, window) -> ImageData``.
        shape: ``path -> channels-first shape``, without decoding the pixels.
        write: ``(path, array, meta) -> None``, or None for a format unetkit reads but does not write.
    """

    name: str
    suffixes: tuple[str, ...]
    signatures: tuple[tuple[int, bytes], ...]
    read: Callable[[Path, Window | None], ImageData]
    shape: Callable[[Path], tuple[int, ...]]
    write: Callable[[Path, np.ndarray, dict[str, Any]], None] | None = None


def _read_pillow(path: Path, window: Window | None) -> ImageData:
    array, meta = readers_image.read_pillow(path)
    return _crop(ImageData(array, meta), window=window, path=path)


def _read_nifti(path: Path, window: Window | None) -> ImageData:
    if window is not None:
        raise ValueError(f"{path}: windowed reads are not supported for NIfTI volumes")
    return ImageData(*nifti.read_nifti(path))


def _write_tiff(path: Path, array: np.ndarray, meta: dict[str, Any]) -> None:
    if meta.get("crs") is not None or meta.get("transform") is not None:
        geotiff.write_geotiff(path, array, meta=meta)
    else:
        readers_image.write_tiff(path, array)


def _write_nifti(path: Path, array: np.ndarray, meta: dict[str, Any]) -> None:
    nifti.write_nifti(path, array, like_meta=meta)


def _write_png(path: Path, array: np.ndarray, meta: dict[str, Any]) -> None:
    readers_image.write_png(path, array, meta=meta)


_pillow, _pillow_shape = _read_pillow, readers_image.pillow_shape
FORMATS: tuple[ImageFormat, ...] = (
    ImageFormat("PNG", (".png",), ((0, b"\x89PNG\r\n\x1a\n"),), _pillow, _pillow_shape, _write_png),
    ImageFormat("JPEG", (".jpg", ".jpeg"), ((0, b"\xff\xd8\xff"),), _pillow, _pillow_shape),
    ImageFormat("GIF", (".gif",), ((0, b"GIF87a"), (0, b"GIF89a")), _pillow, _pillow_shape),
    ImageFormat("BMP", (".bmp",), ((0, b"BM"),), _pillow, _pillow_shape),
    ImageFormat("TIFF", readers_image.TIFF_SUFFIXES,
                ((0, b"II*\x00"), (0, b"MM\x00*"), (0, b"II+\x00"), (0, b"MM\x00+")),  # classic and BigTIFF
                lambda path, window: _read_tiff(path, window=window), readers_image.tiff_shape, _write_tiff),
    # .nii.gz is gzip (its magic); .nii carries "n+1" at byte 344 (NIfTI-1) or "n+2" at 4 (NIfTI-2).
    ImageFormat("NIfTI", nifti.NIFTI_SUFFIXES, ((0, b"\x1f\x8b"), (344, b"n+1\x00"), (4, b"n+2\x00")),
                _read_nifti, nifti.nifti_shape, _write_nifti),
)  # fmt: skip
_BY_SUFFIX = {suffix: fmt for fmt in FORMATS for suffix in fmt.suffixes}
SUPPORTED_SUFFIXES = tuple(_BY_SUFFIX)
WRITABLE_SUFFIXES = tuple(suffix for fmt in FORMATS if fmt.write for suffix in fmt.suffixes)


def format_for(path: str | Path) -> ImageFormat:
    """The format a file's suffix names.

    Raises:
        ValueError: a suffix no format has (the message lists the supported ones).
    """
    suffix = full_suffix(path)
    fmt = _BY_SUFFIX.get(suffix)
    if fmt is None:
        raise ValueError(f"{path}: unsupported image type {suffix!r}; supported: {', '.join(SUPPORTED_SUFFIXES)}")
    return fmt


def sniff_format(path: str | Path) -> ImageFormat | None:
    """The format a file's first bytes identify, or None (unknown content, or unreadable)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(352)
    except OSError:
        return None
    for fmt in FORMATS:
        if any(head[offset : offset + len(magic)] == magic for offset, magic in fmt.signatures):
            return fmt
    return None


@dataclass
class ImageData:
    """An image as read from disk.

    Attributes:
        array: channels-first pixels, ``(C, H, W)`` for 2D or ``(C, D, H, W)`` for volumes, in the
            file's own dtype.
        meta: ``format``, ``dtype`` and format-specific geometry (see the reader modules).
    """

    array: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Shape without the channel axis."""
        return tuple(self.array.shape[1:])


def read_image(path: str | Path, *, window: Window | None = None) -> ImageData:
    """Read an image, volume or raster into a channels-first array.

    Args:
        path: image file; the suffix picks the reader (see the module docstring).
        window: ``(row_off, col_off, height, width)`` to read only part of a 2D image. TIFF and
            GeoTIFF read just the window from disk (bounded memory for huge rasters); other
            2D formats are decoded whole, then cropped. Not available for NIfTI.

    Returns:
        :class:`ImageData` with ``array`` and ``meta``; a windowed read also has
        ``meta["window"]``, and a GeoTIFF's ``meta["transform"]`` is that of the window.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: unsupported suffix, a window outside the image or on a volume, or an
            unreadable / truncated file (``"<path>: unreadable image (...)"``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    fmt = format_for(path)
    try:
        return fmt.read(path, window)
    except ValueError as err:
        raise _with_content_hint(err, path, fmt) from err


def _read_tiff(path: Path, *, window: Window | None) -> ImageData:
    if readers_image.tiff_is_georeferenced(path):
        return ImageData(*geotiff.read_geotiff(path, window=window))
    if window is not None and _single_page(path) and _has_rasterio():
        # GDAL reads only the blocks under the window: a huge plain TIFF never sits in memory.
        array, meta = geotiff.read_geotiff(path, window=window)
        meta["format"] = "tiff"
        return ImageData(array, meta)
    array, meta = readers_image.read_tiff(path)
    return _crop(ImageData(array, meta), window=window, path=path)


def _single_page(path: Path) -> bool:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return len(tif.pages) == 1
    except Exception:  # noqa: BLE001 - the full reader reports a broken file properly
        return False


def _has_rasterio() -> bool:
    try:
        import rasterio  # noqa: F401
    except ImportError:
        return False
    return True


def _crop(image: ImageData, *, window: Window | None, path: Path) -> ImageData:
    if window is None:
        return image
    height, width = image.array.shape[-2:]
    row, col, h, w = check_window(window, height=height, width=width, path=path)
    array = np.ascontiguousarray(image.array[..., row : row + h, col : col + w])
    return ImageData(array, {**image.meta, "window": (row, col, h, w)})


def image_shape(path: str | Path) -> tuple[int, ...]:
    """Channels-first shape of an image without decoding its pixels (cheap, for dataset scans).

    Returns:
        ``(C, H, W)`` for 2D images, ``(C, D, H, W)`` for TIFF stacks, ``(C, X, Y, Z)`` for NIfTI.

    Raises:
        FileNotFoundError / ValueError: as :func:`read_image`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    fmt = format_for(path)
    try:
        return fmt.shape(path)
    except ValueError as err:
        raise _with_content_hint(err, path, fmt) from err


def _with_content_hint(err: ValueError, path: Path, fmt: ImageFormat) -> ValueError:
    """``err``, plus what the file really is when its first bytes name another format than its suffix."""
    actual = sniff_format(path)
    if actual is None or actual.name == fmt.name or "unreadable" not in str(err):
        return err
    return ValueError(f"{err}; its first bytes are those of a {actual.name} file, not {fmt.name}: is the suffix wrong?")


def write_image(path: str | Path, array: np.ndarray, *, meta: dict[str, Any] | None = None) -> None:
    """Write an array to disk atomically (temporary file in the same folder, then rename).

    Args:
        path: destination; the suffix picks the format: ``.png`` (uint8 1-4 channels or uint16
            grey; palette kept when ``meta`` has ``mode="P"`` + ``palette``), ``.tif`` / ``.tiff``
            (GeoTIFF when ``meta`` has a ``crs`` or ``transform``, else a plain lossless TIFF of
            any dtype), ``.nii`` / ``.nii.gz`` (affine and header from ``meta``).
        array: channels-first ``(C, H, W)`` / ``(C, X, Y, Z)``; ``(H, W)`` is accepted for 2D.
        meta: the ``meta`` of the source image, to keep its geometry.

    Raises:
        ValueError: unsupported suffix or an array the format cannot hold.
    """
    suffix = full_suffix(path)
    fmt = _BY_SUFFIX.get(suffix)
    if fmt is None or fmt.write is None:
        raise ValueError(f"{path}: cannot write {suffix!r}; writable: {', '.join(WRITABLE_SUFFIXES)}")
    fmt.write(Path(path), array, meta or {})
