"""Predicting files: which inputs a command names, which outputs each gets, and writing them atomically.

Outputs per input ``<stem>.<ext>``: the mask ``<stem>.<ext>`` for TIFF / NIfTI inputs (same CRS and
transform, or the same affine), ``<stem>.png`` otherwise; ``<stem>_prob`` and ``<stem>_uncertainty`` as
float32 ``.tif`` (``.nii.gz`` for NIfTI inputs, with the input's affine); ``<stem>_overlay.png`` for 2D
images. Every file is written to a temporary name and renamed into place once complete.

Used by ``unetkit predict`` and by the HTTP service; :mod:`unetkit.infer.pipeline` runs the same steps
(:func:`read_input`, the predictor, :func:`write_outputs`) for many files with reading and writing overlapped.
"""

from __future__ import annotations

import glob
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from unetkit.data.io import full_suffix

if TYPE_CHECKING:
    from unetkit.data.io import ImageData
    from unetkit.infer.predictor import Prediction

NIFTI = (".nii", ".nii.gz")


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files, folders (their image files, sorted) and globs -> a list of files; nothing found is an error."""
    from unetkit.data.io import SUPPORTED_SUFFIXES

    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.is_file() and full_suffix(p) in SUPPORTED_SUFFIXES)
        elif path.exists():
            files.append(path)
        else:
            matches = sorted(Path(m) for m in glob.glob(item))
            if not matches:
                raise FileNotFoundError(f"{item}: no such file, folder or matching glob")
            files += matches
    if not files:
        raise FileNotFoundError(f"no images found in {', '.join(inputs)}")
    return files


def output_paths(path: Path, out: Path, *, prob: bool, uncertainty: bool, overlay: bool) -> dict[str, Path]:
    """The files written for input ``path`` (keys ``mask``, and ``prob`` / ``uncertainty`` / ``overlay`` if asked).

    Raises:
        ValueError: a file type ``unetkit`` cannot read (before any work is done).
    """
    from unetkit.data.io import SUPPORTED_SUFFIXES

    suffix = full_suffix(path)
    if suffix not in SUPPORTED_SUFFIXES:
        raise ValueError(f"unsupported image type {suffix or '(no suffix)'!r}; supported: {', '.join(SUPPORTED_SUFFIXES)}")
    stem = path.name[: -len(suffix)]
    keeps_format = suffix in (".tif", ".tiff") + NIFTI
    extra = ".nii.gz" if suffix in NIFTI else ".tif"
    targets = {"mask": out / (stem + (suffix if keeps_format else ".png"))}
    if prob:
        targets["prob"] = out / f"{stem}_prob{extra}"
    if uncertainty:
        targets["uncertainty"] = out / f"{stem}_uncertainty{extra}"
    if overlay:
        targets["overlay"] = out / f"{stem}_overlay.png"
    return targets


def claim_outputs(path: Path, targets: dict[str, Path], claimed: set[Path]) -> None:
    """Refuse outputs that would overwrite an input or another input's outputs of this run."""
    for target in targets.values():
        resolved = target.resolve()
        if resolved in claimed:
            raise ValueError(f"output {target} would overwrite an input or another input's output; "
                             "use another --out folder or rename the input")
    claimed.update(t.resolve() for t in targets.values())


def predict_file(predictor, path: Path, targets: dict[str, Path], *, windowed: bool = False) -> list[Path]:  # type: ignore[no-untyped-def]
    """Predict one file and write ``targets`` (see :func:`output_paths`) atomically; returns the paths written."""
    if windowed:
        from unetkit.infer.raster import predict_raster

        if predictor.infer.min_size > 0:
            print(f"unetkit predict: {path}: note: --min-size is not applied to windowed rasters", file=sys.stderr)
        return predict_raster(predictor, path, mask_path=targets["mask"], prob_path=targets.get("prob"),
                              uncertainty_path=targets.get("uncertainty")).written
    image, pixels = read_input(path)
    result = predict_pixels(predictor, pixels, image.meta.get("spacing"))
    return write_outputs(path, targets, image, result, background=predictor.plan.data.background)


def predict_pixels(predictor, pixels: np.ndarray, spacing) -> Prediction:  # type: ignore[no-untyped-def]
    """``predictor(pixels)``, told the voxel ``spacing`` when the file has one (a volume is then predicted at the
    plan's target spacing and brought back to its own grid); 2D images call it without, as before."""
    return predictor(pixels) if spacing is None else predictor(pixels, spacing=spacing)


def read_input(path: Path) -> tuple[ImageData, np.ndarray]:
    """The image at ``path`` as read (its pixels feed the overlay) and its pixels as float32 (what is predicted)."""
    from unetkit.data.io import read_image

    image = read_image(path)
    return image, image.array.astype(np.float32)


def write_outputs(
    path: Path, targets: dict[str, Path], image: ImageData, result: Prediction, *, background: bool = True
) -> list[Path]:
    """Write ``targets`` for the prediction ``result`` of input ``path`` (read as ``image``); returns the paths written.

    ``background``: the plan's ``data.background``; without one the overlay draws class 0 too.
    """
    from unetkit.data.io import write_image

    meta = _geometry(image.meta)
    labels = result.labels.astype(np.uint8 if result.labels.max(initial=0) < 256 else np.uint16)
    written = [targets["mask"]]
    write_image(written[-1], labels[None], meta=meta if full_suffix(path) in (".tif", ".tiff") + NIFTI else None)
    if "prob" in targets:
        written.append(targets["prob"])
        write_image(written[-1], result.probabilities.astype(np.float32), meta=meta)
    if "uncertainty" in targets and result.uncertainty is not None:
        written.append(targets["uncertainty"])
        write_image(written[-1], result.uncertainty[None].astype(np.float32), meta=meta)
    if "overlay" in targets and labels.ndim == 2:
        from unetkit.runtime.overlay import drawn_labels, make_overlay

        written.append(targets["overlay"])
        rgb = np.moveaxis(image.array[:3], 0, -1) if image.array.shape[0] >= 3 else image.array[0]
        write_image(written[-1], np.moveaxis(make_overlay(rgb, drawn_labels(result.labels, background=background)), -1, 0))
    return written


def _geometry(meta: dict) -> dict | None:  # type: ignore[type-arg]
    """Where the outputs sit: the source's CRS + transform (GeoTIFF) or affine + header (NIfTI), else None.

    The source's ``nodata`` is dropped: it describes the image's pixel values, and in a label raster it
    would mark class ``nodata`` (often 0, the background) as missing.
    """
    if meta.get("format") == "nifti":
        return meta
    if meta.get("crs") is not None or meta.get("transform") is not None:
        return {"crs": meta.get("crs"), "transform": meta.get("transform")}
    return None
