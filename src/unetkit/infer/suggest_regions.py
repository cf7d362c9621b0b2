"""``unetkit suggest --regions``: boxes to label instead of whole images (for large images).

Each candidate image is cut into a grid of ``size`` x ``size`` boxes (:func:`box_grid`; the last row and
column are cut short at the image's edge); :func:`unetkit.infer.suggest.score_regions` scores a box like a
whole image (``pool_uncertainty`` over the box's pixel uncertainty and its predicted foreground plus most
uncertain pixels). The boxes of all
images are ranked by score, at most ``per_image`` from one image, so one large confusing image does not take
every pick. Written beside ``suggestions.csv``: ``regions.csv`` (rank, file, y0, x0, y1, x1, score, ...) and
one PNG crop per box in ``regions/`` (``<rank>_<image stem>_y<y0>_x<x0>.png``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unetkit._io import atomic_path, write_text_atomic

REGION_COLUMNS = ("rank", "file", "y0", "x0", "y1", "x1", "score", "uncertainty", "foreground_fraction", "crop")


@dataclass
class Region:
    """One box of one image: ``[y0, y1) x [x0, x1)`` in the image's pixels, and its score."""

    path: Path
    box: tuple[int, int, int, int]  # y0, x0, y1, x1
    score: float
    uncertainty: float
    foreground_fraction: float


def box_grid(shape: tuple[int, int], size: int) -> list[tuple[int, int, int, int]]:
    """Non-overlapping ``(y0, x0, y1, x1)`` boxes of side ``size`` covering ``shape`` (edge boxes cut short).

    Example:
        >>> box_grid((3, 5), 2)
        [(0, 0, 2, 2), (0, 2, 2, 4), (0, 4, 2, 5), (2, 0, 3, 2), (2, 2, 3, 4), (2, 4, 3, 5)]
    """
    if size < 1:
        raise ValueError(f"region size must be at least 1 pixel, got {size}")
    h, w = shape
    return [(y, x, min(y + size, h), min(x + size, w)) for y in range(0, h, size) for x in range(0, w, size)]


def pick_regions(regions: Sequence[Region], *, n: int, per_image: int = 2) -> list[Region]:
    """The ``n`` best-scoring boxes, at most ``per_image`` from one image (ties: the earlier box).

    Raises:
        ValueError: fewer than ``n`` boxes can be picked.
    """
    order = sorted(range(len(regions)), key=lambda i: -regions[i].score)
    taken: dict[Path, int] = {}
    picks = []
    for i in order:
        r = regions[i]
        if taken.get(r.path, 0) < per_image:
            picks.append(r)
            taken[r.path] = taken.get(r.path, 0) + 1
            if len(picks) == n:
                return picks
    raise ValueError(f"--n {n} is more than the {len(picks)} region(s) that can be picked ({per_image} per image)")


def write_regions(picks: Sequence[Region], out: Path) -> list[Path]:
    """``out/regions.csv`` and ``out/regions/<rank>_<stem>_y<y0>_x<x0>.png`` crops (from the image files)."""
    from PIL import Image

    from unetkit.data.io import read_image
    from unetkit.infer.suggest_report import _to_rgb

    folder = out / "regions"
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(REGION_COLUMNS)
    for rank, r in enumerate(picks, start=1):
        y0, x0, y1, x1 = r.box
        crop = folder / f"{rank:03d}_{r.path.stem}_y{y0}_x{x0}.png"
        image = read_image(r.path).array[:, y0:y1, x0:x1]
        if image.dtype == np.uint8 and image.shape[0] in (1, 3):  # the file's own pixels
            pixels = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
        else:
            pixels = _to_rgb(image)
        with atomic_path(crop) as tmp:
            Image.fromarray(np.ascontiguousarray(pixels)).save(tmp, format="PNG")
        writer.writerow([rank, str(r.path), y0, x0, y1, x1, f"{r.score:.6f}", f"{r.uncertainty:.6f}",
                         f"{r.foreground_fraction:.6f}", str(crop)])
    table = out / "regions.csv"
    write_text_atomic(table, buffer.getvalue())
    return [table, folder]
