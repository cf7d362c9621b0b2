"""One entry point for reading and writing every image format unetkit accepts.

``read_image`` dispatches on the file suffix:

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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unetkit.data import geotiff, nifti, readers_image
from unetkit.data._common import Window, check_window, full_suffix

SUPPORTED_SUFFIXES = readers_image.PILLOW_SUFFIXES + readers_image.TIFF_SUFFIXES + nifti.NIFTI_SUFFIXES
WRITABLE_SUFFIXES = (".png",) + readers_image.TIFF_SUFFIXES + nifti.NIFTI_SUFFIXES


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
    suffix = full_suffix(path)
    if suffix in nifti.NIFTI_SUFFIXES:
        if window is not None:
            raise ValueError(f"{path}: windowed reads are not supported for NIfTI volumes")
        return ImageData(*nifti.read_nifti(path))
    if suffix in readers_image.TIFF_SUFFIXES:
        return _read_tiff(path, window=window)
    if suffix in readers_image.PILLOW_SUFFIXES:
        array, meta = readers_image.read_pillow(path)
        return _crop(ImageData(array, meta), window=window, path=path)
    raise ValueError(f"{path}: unsupported image type {suffix!r}; supported: {', '.join(SUPPORTED_SUFFIXES)}")


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
    suffix = full_suffix(path)
    if suffix in nifti.NIFTI_SUFFIXES:
        return nifti.nifti_shape(path)
    if suffix in readers_image.TIFF_SUFFIXES:
        return readers_image.tiff_shape(path)
    if suffix in readers_image.PILLOW_SUFFIXES:
        return readers_image.pillow_shape(path)
    raise ValueError(f"{path}: unsupported image type {suffix!r}; supported: {', '.join(SUPPORTED_SUFFIXES)}")


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
    meta = meta or {}
    if suffix == ".png":
        readers_image.write_png(path, array, meta=meta)
    elif suffix in readers_image.TIFF_SUFFIXES:
        if meta.get("crs") is not None or meta.get("transform") is not None:
            geotiff.write_geotiff(path, array, meta=meta)
        else:
            readers_image.write_tiff(path, array)
    elif suffix in nifti.NIFTI_SUFFIXES:
        nifti.write_nifti(path, array, like_meta=meta)
    else:
        raise ValueError(f"{path}: cannot write {suffix!r}; writable: {', '.join(WRITABLE_SUFFIXES)}")
