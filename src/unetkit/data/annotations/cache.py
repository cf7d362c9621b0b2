"""Rasterised masks of an annotation export, kept as PNG class-index masks in a cache folder.

Why files and not arrays in memory: every reader of a dataset (the dataset check, the planner's fingerprint,
the trainer and its worker processes, ``evaluate``) then reads these masks exactly as it reads a folder of
mask PNGs, so an export behaves as the same data converted by hand; and the rasterisation is done once per
version of the export, not once per process. The folder is named after a hash of everything the masks depend
on (the export's bytes, the options, this module's version), so an edited export gets new masks; each PNG is
written to a temporary name and renamed, so a killed run never leaves half a mask behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from unetkit._io import atomic_path
from unetkit.data.annotations._model import ERROR, AnnotatedImage, AnnotationSource, SourceFinding
from unetkit.data.annotations.raster import paint

CACHE_VERSION = "1"


def default_cache_root() -> Path:
    """``~/.cache/unetkit/labels`` when the home folder is writable, else a per-user folder in the temp dir."""
    home = Path.home() / ".cache" / "unetkit" / "labels"
    try:
        home.mkdir(parents=True, exist_ok=True)
        return home
    except OSError:
        uid = os.getuid() if hasattr(os, "getuid") else 0
        fallback = Path(tempfile.gettempdir()) / f"unetkit-labels-{uid}"
        fallback.mkdir(mode=0o700, exist_ok=True)
        return fallback


def materialise(
    source: AnnotationSource, *, cache_root: Path | None = None
) -> tuple[dict[str, Path], list[SourceFinding]]:
    """Write (or reuse) one mask PNG per image of ``source`` whose image file exists.

    Args:
        source: the parsed export.
        cache_root: where the per-export folders go (default :func:`default_cache_root`).

    Returns:
        ``(masks, findings)``: sample key -> mask file, and the images whose mask could not be made (errors
        naming the image and the problem).
    """
    folder = (cache_root or default_cache_root()) / f"{source.kind}-{source.digest[:20]}-v{CACHE_VERSION}"
    masks: dict[str, Path] = {}
    findings: list[SourceFinding] = []
    for image in source.images:
        if image.image is None:
            continue
        out = folder / f"{image.key}.png"
        if not out.is_file():
            try:
                mask = render(image)
            except ValueError as err:  # MaskEncodingError carries its own code (unknown_colours ...)
                code = getattr(err, "code", "bad_annotation")
                findings.append(SourceFinding(ERROR, code, str(err), [image.name]))
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(out) as tmp:
                Image.fromarray(mask).save(tmp, format="PNG")
        masks[image.key] = out
    return masks, findings


def render(image: AnnotatedImage) -> np.ndarray:
    """The uint8 class-index mask of one image (its painter's, or its regions painted in order).

    Raises:
        ValueError: a region that cannot be decoded, or the image's size cannot be read.
    """
    if image.painter is not None:
        return image.painter()
    height, width = image_size(image)
    return paint(image.regions, height=height, width=width)


def image_size(image: AnnotatedImage) -> tuple[int, int]:
    """``(height, width)``: as the export declares it, else read from the image file's header.

    Raises:
        ValueError: neither is available.
    """
    if image.height is not None and image.width is not None:
        return image.height, image.width
    if image.image is None:
        raise ValueError(f"{image.name}: the export gives no size and the image was not found")
    try:
        with Image.open(image.image) as im:
            width, height = im.size
    except (OSError, Image.DecompressionBombError):
        from unetkit.data._raw import read_image_array

        array, _ = read_image_array(image.image)
        height, width = array.shape[-2:]
    image.height, image.width = int(height), int(width)
    return image.height, image.width
