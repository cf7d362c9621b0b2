"""The shape every annotation export is parsed into: classes, images with their regions, and findings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ERROR, WARNING = "error", "warning"
MiB = 2**20
# Largest annotation file read (COCO / Label Studio JSON, CVAT XML, labelmap.txt).
MAX_ANNOTATION_BYTES = 1024 * MiB


@dataclass
class Region:
    """One annotation of one image, in pixel coordinates (x to the right, y down, origin at the image's corner).

    Exactly one of ``polygons`` / ``rle`` / ``bitmap`` is set.

    Attributes:
        label: the class index it paints (1..K-1).
        item: how a message names it, e.g. ``"annotation 17"``.
        polygons: flat ``[x0, y0, x1, y1, ...]`` rings, filled and united (COCO's polygon semantics).
        rle: a COCO run-length encoding of the whole image (``{"size": [h, w], "counts": str | list}``).
        bitmap: a boolean ``(H, W)`` mask of the whole image.
    """

    label: int
    item: str
    polygons: list[list[float]] | None = None
    rle: dict[str, Any] | None = None
    bitmap: np.ndarray | None = None


@dataclass
class AnnotatedImage:
    """One image of an export and what was drawn on it.

    Attributes:
        key: unique sample key (the image's name in the export without extension, sub-folders kept).
        name: the image's name as the export writes it (``file_name``, a Label Studio URL ...).
        image: the image file found on disk; ``None`` when it was not found.
        height / width: the size the export declares (``None``: read from the image file).
        regions: what to paint, in painting order (later regions on top).
        painter: instead of ``regions``, a function returning the finished class-index mask (CVAT mask PNGs,
            GIS vectors rasterised on the scene's grid); it raises ``ValueError`` naming the problem.
    """

    key: str
    name: str
    image: Path | None
    height: int | None = None
    width: int | None = None
    regions: list[Region] = field(default_factory=list)
    painter: Callable[[], np.ndarray] | None = None


@dataclass
class SourceFinding:
    """A problem in an export: ``severity`` (``error`` blocks training), stable ``code``, one-line ``message``
    naming the item, and the ``items`` it concerns."""

    severity: str
    code: str
    message: str
    items: list[str] = field(default_factory=list)


@dataclass
class AnnotationSource:
    """A parsed annotation export.

    Attributes:
        kind: ``coco`` | ``cvat_masks`` | ``cvat_xml`` | ``labelstudio`` | ``vectors``.
        path: the export as given (file or folder).
        classes: class names, background first (index 0).
        images: the images, in the export's order.
        findings: problems found while parsing.
        digest: a hash of everything the masks depend on (cache key).
    """

    kind: str
    path: Path
    classes: list[str]
    images: list[AnnotatedImage]
    findings: list[SourceFinding] = field(default_factory=list)
    digest: str = ""

    def add(self, severity: str, code: str, message: str, items: list[str] | None = None) -> None:
        self.findings.append(SourceFinding(severity, code, message, list(items or [])))
