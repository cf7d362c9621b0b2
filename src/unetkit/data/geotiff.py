"""GeoTIFF (and large plain TIFF) reading by window and tile-by-tile writing, via rasterio.

Geometry lives in ``meta``:

- ``crs``: the coordinate reference system as WKT (``None`` when the file has none);
- ``transform``: the pixel -> map affine as 6 floats ``(a, b, c, d, e, f)`` in rasterio /
  ``affine`` order: ``x = a * col + b * row + c``, ``y = d * col + e * row + f``. For a windowed
  read it is the transform *of the window*, so the array can be written back in place;
- ``nodata``: the no-data value or ``None``.

A raster larger than memory is read with ``window=(row_off, col_off, height, width)`` (each call
opens and closes the file, so GDAL's block cache is released between windows) and written with
:class:`GeoTiffWriter`, which streams windows into a temporary file and renames it into place
only when every window was written without error.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from unetkit.data._common import (
    Window,
    WindowError,
    atomic_target,
    check_window,
    to_channels_first,
    unreadable,
)

_DEFAULT_BLOCK = 512


def _rasterio() -> Any:
    try:
        import rasterio
    except ImportError as err:  # rasterio is the optional "geo" extra
        raise ImportError("GeoTIFF support needs rasterio: pip install 'unetkit[geo]'") from err
    return rasterio


@contextmanager
def _open(path: str | Path, mode: str = "r", **profile: Any) -> Iterator[Any]:
    """rasterio.open without the warning GDAL gives for TIFFs that simply have no geo-reference."""
    rasterio = _rasterio()
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, mode, **profile) as ds:
            yield ds


def raster_shape(path: str | Path) -> tuple[int, int, int]:
    """``(C, H, W)`` of a raster, read from its header only (no pixel data).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a raster GDAL can open.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with _open(path) as ds:
            return int(ds.count), int(ds.height), int(ds.width)
    except Exception as err:  # noqa: BLE001 - rasterio/GDAL errors all mean "cannot open"
        raise unreadable(path, err) from err


def scene_grid(path: str | Path) -> dict[str, Any]:
    """A raster's grid from its header: ``crs`` (rasterio CRS or None), ``transform``, ``height``, ``width`` and
    ``bounds`` (left, bottom, right, top in the CRS).

    Raises:
        ValueError: not a raster GDAL can open.
    """
    try:
        with _open(path) as ds:
            return {"crs": ds.crs, "transform": ds.transform, "height": int(ds.height), "width": int(ds.width),
                    "bounds": tuple(ds.bounds)}  # fmt: skip
    except Exception as err:  # noqa: BLE001 - rasterio/GDAL errors all mean "cannot open"
        raise unreadable(Path(path), err) from err


def pixel_size_cm(path: str | Path) -> float | None:
    """The ground size of a pixel in centimetres (along x), for a raster in a projected CRS in metres; else None."""
    try:
        grid = scene_grid(path)
    except (ValueError, ImportError):
        return None
    crs = grid["crs"]
    if crs is None or not crs.is_projected or str(crs.linear_units).lower() not in ("metre", "meter"):
        return None
    return float(abs(grid["transform"].a) * 100.0)


def shift_transform(transform: tuple[float, ...], *, row: int, col: int) -> tuple[float, ...]:
    """The transform of a window whose top-left pixel is ``(row, col)`` of a raster with ``transform``.

    Pure arithmetic on the 6 coefficients ``(a, b, c, d, e, f)``: only the origin moves, to the
    map position of pixel ``(row, col)``.
    """
    a, b, c, d, e, f = (float(v) for v in transform[:6])
    return (a, b, a * col + b * row + c, d, e, d * col + e * row + f)


def read_geotiff(path: str | Path, *, window: Window | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Read all of a GeoTIFF / TIFF, or one window of it.

    Args:
        path: the raster file.
        window: ``(row_off, col_off, height, width)`` in pixels; ``None`` reads everything.

    Returns:
        ``(array, meta)``: array ``(C, H, W)`` in the file's dtype; meta has ``format="geotiff"``,
        ``dtype``, ``crs`` (WKT or ``None``), ``transform`` (6 floats, of the window if one was
        given, ``None`` without geo-reference), ``nodata``, ``full_shape`` ``(C, H, W)`` of the
        file, ``window`` and ``block_shape``.

    Raises:
        ValueError: window outside the raster, or an unreadable / truncated file.
    """
    from rasterio.windows import Window as RioWindow

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with _open(path) as ds:
            full_shape = (int(ds.count), int(ds.height), int(ds.width))
            rio_window = None
            transform = tuple(ds.transform[:6])
            if window is not None:
                row, col, h, w = check_window(window, height=ds.height, width=ds.width, path=path)
                rio_window = RioWindow(col, row, w, h)
                transform = shift_transform(tuple(ds.transform[:6]), row=row, col=col)
            array = ds.read(window=rio_window)
            georeferenced = ds.crs is not None or not ds.transform.is_identity
            meta: dict[str, Any] = {
                "format": "geotiff",
                "dtype": str(array.dtype),
                "crs": ds.crs.to_wkt() if ds.crs is not None else None,
                "transform": tuple(float(v) for v in transform) if georeferenced else None,
                "nodata": ds.nodata,
                "full_shape": full_shape,
                "window": tuple(window) if window is not None else None,
                "block_shape": tuple(int(v) for v in ds.block_shapes[0]),
            }
    except WindowError:
        raise
    except Exception as err:  # noqa: BLE001 - rasterio/GDAL errors all mean "cannot read"
        raise unreadable(path, err) from err
    return array, meta


def _profile(
    *, height: int, width: int, count: int, dtype: Any, meta: dict[str, Any] | None, path: str | Path
) -> dict[str, Any]:
    """rasterio creation options: tiled + deflate, geometry from ``meta``."""
    meta = meta or {}
    dtype = np.dtype(dtype)
    if height <= 0 or width <= 0 or count <= 0:
        raise ValueError(f"{path}: raster size must be positive, got {count}x{height}x{width}")
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "height": int(height),
        "width": int(width),
        "count": int(count),
        "dtype": dtype.name,
        "compress": meta.get("compress", "deflate"),
        "BIGTIFF": "IF_SAFER",
    }
    if min(height, width) >= 256:
        block = _DEFAULT_BLOCK if min(height, width) >= _DEFAULT_BLOCK else 256
        profile.update(tiled=True, blockxsize=block, blockysize=block)
    if meta.get("crs") is not None:
        from rasterio.crs import CRS

        profile["crs"] = CRS.from_user_input(meta["crs"])
    if meta.get("transform") is not None:
        from rasterio.transform import Affine

        values = tuple(float(v) for v in meta["transform"])
        if len(values) < 6:
            raise ValueError(
                f"{path}: transform needs 6 numbers (a, b, c, d, e, f), got {meta['transform']!r}"
            )
        profile["transform"] = Affine(*values[:6])
    if meta.get("nodata") is not None:
        profile["nodata"] = meta["nodata"]
    return profile


def write_geotiff(path: str | Path, array: np.ndarray, *, meta: dict[str, Any] | None = None) -> None:
    """Write ``(C, H, W)`` / ``(H, W)`` as a tiled, deflate-compressed GeoTIFF, atomically.

    Args:
        path: destination ``.tif``.
        array: pixel data in the dtype to store.
        meta: geometry (``crs``, ``transform``, ``nodata``, optional ``compress``), e.g. from
            :func:`read_geotiff`; CRS and transform are written exactly as given.
    """
    arr = to_channels_first(np.asarray(array), path=path)
    profile = _profile(
        height=arr.shape[1], width=arr.shape[2], count=arr.shape[0], dtype=arr.dtype, meta=meta, path=path
    )
    with atomic_target(path) as tmp:
        try:
            with _open(tmp, "w", **profile) as ds:
                ds.write(arr)
        finally:
            Path(f"{tmp}.aux.xml").unlink(missing_ok=True)


class GeoTiffWriter:
    """Write a large GeoTIFF window by window in bounded memory; the file appears only when complete.

    Example::

        with GeoTiffWriter(out, height=H, width=W, count=1, dtype="uint8", meta=src_meta) as writer:
            for window in windows:
                writer.write(predict(window), window)

    On leaving the ``with`` block normally the temporary file is renamed to ``path``; on an
    exception (or :meth:`abort`) it is deleted and ``path`` is untouched. Pixels never written
    hold 0 (or ``nodata``).

    Args:
        path: destination file.
        height, width, count, dtype: raster size, band count and pixel type.
        meta: geometry (``crs``, ``transform`` of the *full* raster, ``nodata``, ``compress``).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        height: int,
        width: int,
        count: int,
        dtype: Any,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise FileNotFoundError(f"{self.path}: folder {self.path.parent} does not exist")
        self.height, self.width, self.count = int(height), int(width), int(count)
        self.dtype = np.dtype(dtype)
        profile = _profile(
            height=height, width=width, count=count, dtype=self.dtype, meta=meta, path=self.path
        )
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp.tif", dir=self.path.parent)
        os.close(fd)
        self._tmp = Path(tmp)
        self._cm = _open(self._tmp, "w", **profile)
        try:
            self._ds = self._cm.__enter__()
        except BaseException:
            self._remove_temp()
            raise
        self._closed = False

    def write(self, array: np.ndarray, window: Window) -> None:
        """Write ``array`` ``(count, h, w)`` (or ``(h, w)`` for one band) at ``window``.

        Raises:
            ValueError: shape does not match the window, window outside the raster, a dtype that
                cannot be stored without loss, or the writer is already closed.
        """
        from rasterio.windows import Window as RioWindow

        if self._closed:
            raise ValueError(f"{self.path}: writer is already closed")
        row, col, h, w = check_window(window, height=self.height, width=self.width, path=self.path)
        arr = to_channels_first(np.asarray(array), path=self.path)
        if arr.shape != (self.count, h, w):
            raise ValueError(
                f"{self.path}: array shape {arr.shape} does not match window, expected {(self.count, h, w)}"
            )
        if not np.can_cast(arr.dtype, self.dtype, casting="safe"):
            raise ValueError(f"{self.path}: cannot store {arr.dtype} in a {self.dtype} raster without loss")
        self._ds.write(arr.astype(self.dtype, copy=False), window=RioWindow(col, row, w, h))

    def close(self) -> None:
        """Flush and move the finished file to ``path`` (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._cm.__exit__(None, None, None)
            os.replace(self._tmp, self.path)
        finally:
            self._remove_temp()

    def abort(self) -> None:
        """Discard everything written; ``path`` is left as it was (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._cm.__exit__(None, None, None)
        finally:
            self._remove_temp()

    def _remove_temp(self) -> None:
        self._tmp.unlink(missing_ok=True)
        Path(f"{self._tmp}.aux.xml").unlink(missing_ok=True)

    def __enter__(self) -> GeoTiffWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
