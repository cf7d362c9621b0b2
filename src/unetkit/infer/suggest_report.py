"""What ``unetkit suggest`` writes: ``suggestions.csv`` and a contact sheet of the picks with their uncertainty.

Both are written atomically (a temporary file, then a rename).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unetkit._io import atomic_path, write_text_atomic

# The writers take unetkit.infer.suggest.Pick objects; that module imports this one, so they are typed as Any
# here (an import, even under TYPE_CHECKING, would be an import cycle).
Pick = Any

CSV_COLUMNS = ("rank", "file", "score", "uncertainty", "foreground_uncertainty", "foreground_fraction",
               "tta_variance", "diversity_distance", "selection_value")  # fmt: skip
# Colour map of the uncertainty thumbnails: 0 black -> purple -> orange -> 1 pale yellow.
_ANCHORS = np.array([[0, 0, 4], [120, 28, 109], [237, 105, 37], [252, 255, 164]], dtype=np.float64)


def write_csv(picks: Sequence[Pick], path: Path) -> Path:
    """One row per pick, best first (columns :data:`CSV_COLUMNS`); the first pick's distance is empty."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for p in picks:
        s = p.image
        distance = "" if math.isinf(p.distance) or math.isnan(p.distance) else f"{p.distance:.6f}"
        writer.writerow([p.rank, str(s.path), f"{s.score:.6f}", f"{s.uncertainty:.6f}",
                         f"{s.foreground_uncertainty:.6f}", f"{s.foreground_fraction:.6f}", f"{s.tta_variance:.6g}",
                         distance, f"{p.value:.6f}"])  # fmt: skip
    write_text_atomic(path, buffer.getvalue())
    return path


def colourise(u: np.ndarray) -> np.ndarray:
    """``(H, W)`` values in [0, 1] -> ``(H, W, 3)`` uint8 through :data:`_ANCHORS` (piecewise linear)."""
    t = np.clip(u, 0.0, 1.0) * (len(_ANCHORS) - 1)
    low = np.minimum(t.astype(int), len(_ANCHORS) - 2)
    frac = (t - low)[..., None]
    return np.round(_ANCHORS[low] * (1 - frac) + _ANCHORS[low + 1] * frac).astype(np.uint8)


def _to_rgb(image: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` any dtype -> ``(H, W, 3)`` uint8, stretched between the 1st and 99th percentiles."""
    pixels = image[:3].astype(np.float64) if image.shape[0] >= 3 else np.repeat(image[:1].astype(np.float64), 3, 0)
    low, high = np.percentile(pixels, (1, 99))
    scaled = (pixels - low) / (high - low) if high > low else np.zeros_like(pixels)
    return np.round(np.clip(scaled, 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)


def thumbnails(image: np.ndarray, uncertainty: np.ndarray, *, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(image RGB, uncertainty RGB)`` thumbnails, longest side ``size``, of a ``(C, *spatial)`` image and its
    ``(*spatial)`` uncertainty map; a volume shows its middle slice along the first spatial axis."""
    from PIL import Image

    if uncertainty.ndim == 3:
        middle = uncertainty.shape[0] // 2
        image, uncertainty = image[:, middle], uncertainty[middle]
    h, w = uncertainty.shape
    scale = size / max(h, w)
    shape = (max(1, round(w * scale)), max(1, round(h * scale)))
    rgb = np.asarray(Image.fromarray(_to_rgb(image)).resize(shape, Image.Resampling.BILINEAR))
    heat = np.asarray(Image.fromarray(colourise(uncertainty)).resize(shape, Image.Resampling.NEAREST))
    return rgb, heat


def write_contact_sheet(picks: Sequence[Pick], path: Path, *, columns: int = 4, size: int = 160) -> Path:
    """A grid PNG: per pick its image and uncertainty map side by side, under ``#rank file (score)``."""
    from PIL import Image, ImageDraw

    label_h, pad = 14, 6
    cell_w, cell_h = 2 * size + 3 * pad, size + label_h + 2 * pad
    cols = max(1, min(columns, len(picks)))
    rows = max(1, math.ceil(len(picks) / cols))
    sheet = Image.new("RGB", (cols * cell_w, rows * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, pick in enumerate(picks):
        x0, y0 = (i % cols) * cell_w, (i // cols) * cell_h
        text = f"#{pick.rank} {pick.image.path.name} ({pick.image.score:.3f})"
        draw.text((x0 + pad, y0 + 2), text[: cell_w // 6], fill=(0, 0, 0))
        if pick.image.thumbs is not None:
            rgb, heat = pick.image.thumbs
            sheet.paste(Image.fromarray(rgb), (x0 + pad, y0 + label_h + pad))
            if heat is not None:  # cold-start picks have no uncertainty map
                sheet.paste(Image.fromarray(heat), (x0 + 2 * pad + size, y0 + label_h + pad))
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
    return path
