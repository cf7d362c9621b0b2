"""Writing generated images: a PNG grid plus one PNG per image, each written atomically."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from unetkit._io import atomic_path


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``(N, C, H, W)`` samples in ``[-1, 1]`` -> ``(N, H, W, C)`` uint8 (values outside are clipped)."""
    scaled = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round()
    return scaled.to(torch.uint8).permute(0, 2, 3, 1).numpy()


def make_grid(images: np.ndarray, *, ncols: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile ``(N, H, W, C)`` images row by row into one ``(rows*(H+pad)+pad, cols*(W+pad)+pad, C)`` image.

    ``ncols`` defaults to ``ceil(sqrt(N))``; padding and empty cells are black.
    """
    n, h, w, c = images.shape
    cols = ncols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.zeros((rows * (h + pad) + pad, cols * (w + pad) + pad, c), dtype=images.dtype)
    for i, image in enumerate(images):
        r, col = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[top : top + h, left : left + w] = image
    return grid


def save_samples(images: torch.Tensor, grid_path: str | Path) -> list[Path]:
    """Save ``images`` ``(N, C, H, W)`` in ``[-1, 1]`` as a grid at ``grid_path`` and singles next to it.

    The singles are named after the grid: ``grid.png`` -> ``grid_000.png``, ``grid_001.png``, ...

    Returns:
        The written paths, grid first.
    """
    grid_path = Path(grid_path)
    if grid_path.suffix.lower() != ".png":
        raise ValueError(f"output must be a .png file, got {grid_path}")
    grid_path.parent.mkdir(parents=True, exist_ok=True)
    pixels = to_uint8(images)
    written = [grid_path]
    _save_png(make_grid(pixels), grid_path)
    width = max(3, len(str(len(pixels) - 1)))
    for i, image in enumerate(pixels):
        path = grid_path.with_name(f"{grid_path.stem}_{i:0{width}d}.png")
        _save_png(image, path)
        written.append(path)
    return written


def _save_png(array: np.ndarray, path: Path) -> None:
    image = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
