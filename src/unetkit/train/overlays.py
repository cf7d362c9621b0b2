"""End-of-training overlays: the best model's prediction drawn over a few validation images (2D only)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from unetkit.config import Plan
from unetkit.runtime.examples import Example

MAX_OVERLAYS = 4


def overlay_name(key: str) -> str:
    """A short, file-name-safe name for a sample key (keys of listed samples can be long relative paths):
    its last two parts joined by ``_``, other characters replaced, never a hidden file."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", "_".join(Path(key).parts[-2:])).lstrip("._")
    return safe or "image"


def write_validation_overlays(
    run_dir: Path,
    val_set: list[Example],
    plan: Plan,
    *,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    layout: torch.memory_format | None = None,
    limit: int = MAX_OVERLAYS,
) -> list[Path]:
    """Write ``run_dir/overlays/<key>.png`` for the first ``limit`` validation images, each the image with
    the ``run_dir/best`` model's labels drawn over it (:func:`unetkit.runtime.overlay.make_overlay`).

    Skipped (returns ``[]``) for 3D plans, without a validation set, or without a best checkpoint.

    Returns:
        The paths written, in validation order.
    """
    if plan.data.spatial_dims != 2 or not val_set or not (run_dir / "best").is_dir():
        return []
    from unetkit.data.io import write_image
    from unetkit.runtime.overlay import drawn_labels, make_overlay
    from unetkit.train.evaluation import load_for_evaluation, predict_labels

    model = load_for_evaluation(run_dir / "best", device=device, layout=layout)
    folder = run_dir / "overlays"
    folder.mkdir(exist_ok=True)
    written: list[Path] = []
    used: set[str] = set()
    for example in val_set[:limit]:
        labels = predict_labels(
            model, example.image, tile_size=tuple(plan.train.patch_size), threshold=plan.infer.threshold,
            amp_dtype=amp_dtype, memory_format=layout,
        )  # fmt: skip
        # The image is the normalised one the model saw; make_overlay stretches it to 0..255 for display.
        image = np.moveaxis(example.image[:3], 0, -1) if example.image.shape[0] >= 3 else example.image[0]
        name = _unique(overlay_name(example.key), used)
        path = folder / f"{name}.png"
        write_image(path, np.moveaxis(make_overlay(image, drawn_labels(labels, background=plan.data.background)), -1, 0))
        written.append(path)
    return written


def _unique(name: str, used: set[str]) -> str:
    """``name``, or ``name_2``, ``name_3`` ... if an earlier image took it (two keys can shorten alike)."""
    candidate, n = name, 1
    while candidate in used:
        n += 1
        candidate = f"{name}_{n}"
    used.add(candidate)
    return candidate
