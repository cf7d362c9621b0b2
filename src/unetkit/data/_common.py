"""Helpers shared by the image readers and writers: atomic writes, window checks, suffixes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from unetkit._io import atomic_path

Window = tuple[int, int, int, int]
"""``(row_off, col_off, height, width)`` in pixels of the full image."""


def full_suffix(path: str | Path) -> str:
    """Lower-case suffix of ``path``, keeping the double suffix of ``.nii.gz``."""
    name = Path(path).name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return Path(name).suffix


@contextlib.contextmanager
def atomic_target(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only if the block succeeds.

    The temporary file lives in the destination folder (so ``os.replace`` is an atomic rename on
    the same file system) and keeps the destination's suffix (some writers, e.g. nibabel, pick
    compression from it). On any exception the temporary file is deleted and the destination is
    left as it was.

    Raises:
        FileNotFoundError: the destination folder does not exist.
    """
    with atomic_path(path) as tmp:
        yield tmp


def unreadable(path: str | Path, error: BaseException) -> ValueError:
    """The error every reader raises for a file that exists but cannot be decoded."""
    reason = str(error) or type(error).__name__
    return ValueError(f"{path}: unreadable image ({type(error).__name__}: {reason})")


# The most bytes a whole-image read decodes (TIFF, NIfTI); a header declaring more is refused before allocating.
# Pillow's own limit (Image.MAX_IMAGE_PIXELS) guards PNG / JPEG / GIF / BMP.
MAX_DECODE_BYTES = 16 * 2**30


class DecodeLimitError(ValueError):
    """A header declares more bytes than :data:`MAX_DECODE_BYTES` (or than the memory available)."""


def check_decoded_size(path: str | Path, shape: tuple[int, ...], itemsize: int) -> None:
    """Refuse a whole-image decode of ``shape`` x ``itemsize`` bytes that cannot fit (read from the header only).

    Raises:
        ValueError: over :data:`MAX_DECODE_BYTES` or over the physical memory available now.
    """
    nbytes = int(np.prod([int(s) for s in shape], dtype=object)) * int(itemsize)
    limit = min(MAX_DECODE_BYTES, _available_memory() or MAX_DECODE_BYTES)
    if nbytes > limit:
        shown = "x".join(str(int(s)) for s in shape)
        reason = ValueError(f"header declares {shown} = {nbytes} bytes, over the {limit} bytes a whole-image read may take")
        raise DecodeLimitError(*too_large(path, reason).args)


def _available_memory() -> int | None:
    """Linux's MemAvailable (free memory plus what the page cache would give back), or None where unknown."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


def too_large(path: str | Path, error: BaseException) -> ValueError:
    """The error for a header that declares more pixels than a whole-image decoder accepts (a decompression bomb).

    Raised from the header alone, before any pixel buffer is allocated. The message keeps the error's type name
    (``DecompressionBombError``), which the HTTP service maps to 413.
    """
    return ValueError(
        f"{path}: image too large to decode whole ({type(error).__name__}: {error}); a real raster this large "
        "belongs in a (Geo)TIFF, which `unetkit predict --windowed` predicts window by window in bounded memory"
    )


class WindowError(ValueError):
    """A window that does not fit the image (a ``ValueError``, kept apart from decoding errors)."""


def check_window(window: Window, *, height: int, width: int, path: str | Path) -> Window:
    """Validate a ``(row_off, col_off, height, width)`` window against an image of ``height x width``.

    Returns:
        The window as a tuple of Python ints.

    Raises:
        WindowError: wrong length, non-integer, empty, negative or out-of-bounds window.
    """
    if len(window) != 4:
        raise WindowError(f"{path}: window must be (row_off, col_off, height, width), got {window!r}")
    if not all(isinstance(v, (int, np.integer)) for v in window):
        raise WindowError(f"{path}: window values must be integers, got {window!r}")
    row, col, h, w = (int(v) for v in window)
    if row < 0 or col < 0 or h <= 0 or w <= 0 or row + h > height or col + w > width:
        raise WindowError(
            f"{path}: window (row_off={row}, col_off={col}, height={h}, width={w}) "
            f"is outside the {height}x{width} image"
        )
    return row, col, h, w


def to_channels_first(array: np.ndarray, *, path: str | Path) -> np.ndarray:
    """Turn an ``(H, W)`` or ``(C, H, W)`` array into ``(C, H, W)``.

    Raises:
        ValueError: any other number of dimensions.
    """
    if array.ndim == 2:
        return array[np.newaxis]
    if array.ndim == 3:
        return array
    raise ValueError(f"{path}: expected an (H, W) or (C, H, W) array, got shape {array.shape}")
