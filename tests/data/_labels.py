"""Annotation exports derived from the shared datasets' real masks, for the annotation-format tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

MAGNETIC = ("magnetic_tile_defects", ("Blowhole", "Crack"))


def binary_mask(path: Path) -> np.ndarray:
    """A real mask file read with PIL and binarised at 128 (Kvasir's masks are JPEG)."""
    with Image.open(path) as im:
        return np.asarray(im.convert("L")) >= 128


def magnetic_cases(datasets: Path, per_class: int = 3) -> list[tuple[str, Path, np.ndarray]]:
    """``(file_name relative to images/, image file, class-index mask)`` for a few Blowhole and Crack tiles:
    class 1 = Blowhole, 2 = Crack (the masks' foreground)."""
    root = datasets / MAGNETIC[0]
    out = []
    for label, defect in enumerate(MAGNETIC[1], start=1):
        masks = sorted((root / "masks" / defect).glob("*.png"))
        masks = [m for m in masks if binary_mask(m).sum() > 20][:per_class]
        for mask in masks:
            image = root / "images" / defect / f"{mask.stem}.jpg"
            out.append((f"{defect}/{image.name}", image, binary_mask(mask).astype(np.uint8) * label))
    return out


def rle_uncompressed(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE counts (column-major runs, starting with a run of zeros), as crowd annotations
    store them; computed here by hand, independently of pycocotools."""
    flat = np.asarray(mask, dtype=np.uint8).ravel(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(bounds).tolist()
    return runs if flat[0] == 0 else [0, *runs]
