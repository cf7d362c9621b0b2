"""NIfTI volumes (.nii / .nii.gz) via nibabel, keeping the affine and header for writing back.

Array layout: nibabel's ``(X, Y, Z)`` voxel order is kept (no reorientation, so a prediction
written with the same affine lands on the same voxels); a channel axis is put first:
``(1, X, Y, Z)`` for a 3D file, ``(C, X, Y, Z)`` for a 4D file (time points / modalities).

Affine precision: NIfTI-1 stores the sform rows as float32. An affine read from a NIfTI-1 file is
therefore float32-exact and survives read -> write -> read bit for bit; a new float64 affine
written to NIfTI-1 is rounded to float32 once (about 1e-7 relative). NIfTI-2 stores float64, and
a NIfTI-2 source is written back as NIfTI-2, so any float64 affine is kept exactly there.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from unetkit.data._common import DecodeLimitError, atomic_target, check_decoded_size, unreadable

if TYPE_CHECKING:
    import nibabel as nib

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def _load(path: str | Path, **kwargs: Any) -> nib.Nifti1Image:
    """``nib.load`` narrowed to NIfTI (``Nifti2Image`` is a ``Nifti1Image``); any other image type is an error."""
    import nibabel as nib

    img = nib.load(path, **kwargs)
    if not isinstance(img, nib.Nifti1Image):
        raise ValueError(f"not a NIfTI image (nibabel read it as {type(img).__name__})")
    return img


def read_nifti(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a NIfTI-1/2 file completely.

    Returns:
        ``(array, meta)``: array ``(C, X, Y, Z)`` in the stored dtype (float32 if the header
        scales the values, as nibabel applies ``scl_slope`` / ``scl_inter``); meta has
        ``format="nifti"``, ``nifti_version`` (1 or 2), ``dtype``, ``affine`` (4x4 float64),
        ``header`` (a nibabel header copy, used by :func:`write_nifti`), ``spacing`` (voxel size
        along X, Y, Z) and ``axcodes`` (e.g. ``("R", "A", "S")``).

    Raises:
        ValueError: truncated / corrupt file, or more than 4 non-singleton dimensions.
    """
    import nibabel as nib

    path = Path(path)
    try:
        img = _load(path, mmap=False)
        # nibabel allocates the whole array before reading: check the header's size first.
        check_decoded_size(path, tuple(img.shape), img.get_data_dtype().itemsize)
        data = np.asarray(img.dataobj)
    except (FileNotFoundError, DecodeLimitError):
        raise
    except Exception as err:  # noqa: BLE001 - nibabel/gzip/zlib raise many types; all mean "unreadable"
        raise unreadable(path, err) from err
    array = _channels_first(data, path=path)
    header = img.header.copy()
    meta: dict[str, Any] = {
        "format": "nifti",
        "nifti_version": 2 if isinstance(header, nib.Nifti2Header) else 1,
        "dtype": str(array.dtype),
        "affine": np.array(img.affine, dtype=np.float64, copy=True),
        "header": header,
        "spacing": tuple(float(z) for z in header.get_zooms()[:3]),
        "axcodes": tuple(nib.aff2axcodes(img.affine)),
    }
    return array, meta


def _channels_first(data: np.ndarray, *, path: Path) -> np.ndarray:
    data = data.reshape(_squeezed_shape(data.shape, path=path))
    if data.ndim == 4:
        return np.ascontiguousarray(np.moveaxis(data, -1, 0))
    return np.ascontiguousarray(data[np.newaxis])


def _squeezed_shape(shape: tuple[int, ...], *, path: str | Path) -> tuple[int, ...]:
    # Singleton axes after Z (e.g. 5D vector images stored as X, Y, Z, 1, C) carry no data.
    shape = tuple(shape[:3]) + tuple(s for s in shape[3:] if s != 1)
    if len(shape) > 4:
        raise ValueError(f"{path}: NIfTI with shape {shape} is not supported (at most X, Y, Z and channels)")
    return shape


def nifti_shape(path: str | Path) -> tuple[int, ...]:
    """Channels-first shape :func:`read_nifti` would return, from the header only."""
    try:
        shape = tuple(int(s) for s in _load(path).shape)
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 - any header failure means "unreadable"
        raise unreadable(path, err) from err
    shape = _squeezed_shape(shape, path=path)
    return (shape[3],) + shape[:3] if len(shape) == 4 else (1,) + shape


def write_nifti(path: str | Path, array: np.ndarray, *, like_meta: dict[str, Any] | None = None) -> None:
    """Write ``array`` as NIfTI with the geometry of ``like_meta`` (from :func:`read_nifti`), atomically.

    Args:
        path: ``.nii`` or ``.nii.gz`` destination (gzip follows the suffix).
        array: ``(C, X, Y, Z)`` (``C == 1`` writes a 3D file), or ``(X, Y, Z)``.
        like_meta: meta of the source volume; its affine is written as the sform (and qform) with
            the source's codes, its header supplies units / description. ``None`` writes an
            identity affine.

    Raises:
        ValueError: bad array rank or an affine that is not 4x4.
    """
    import nibabel as nib

    arr = np.asarray(array)
    if arr.ndim == 4:
        arr = arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)
    elif arr.ndim != 3:
        raise ValueError(f"{path}: expected a (C, X, Y, Z) or (X, Y, Z) array, got shape {arr.shape}")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    meta = like_meta or {}
    affine = np.asarray(meta.get("affine", np.eye(4)), dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"{path}: affine must be 4x4, got shape {affine.shape}")
    src_header = meta.get("header")
    nifti2 = meta.get("nifti_version") == 2 or isinstance(src_header, nib.Nifti2Header)
    image_cls, header_cls = (
        (nib.Nifti2Image, nib.Nifti2Header) if nifti2 else (nib.Nifti1Image, nib.Nifti1Header)
    )
    header = header_cls.from_header(src_header) if src_header is not None else header_cls()
    header.set_data_dtype(arr.dtype)
    header.set_slope_inter(None, None)  # values are written as they are; no rescaling on read
    image = image_cls(arr, affine, header)
    sform_code, qform_code = _codes(src_header)
    # The reader prefers the sform, so always write it; keep the source's codes where it had them.
    image.set_sform(affine, code=sform_code or qform_code or 2)
    image.set_qform(affine, code=qform_code)
    with atomic_target(path) as tmp:
        image.to_filename(tmp)


def _codes(header: Any) -> tuple[int, int]:
    if header is None:
        return 2, 0
    return int(header["sform_code"]), int(header["qform_code"])
