"""Annotation exports as datasets: COCO JSON, CVAT (segmentation masks 1.1, XML for images 1.1), Label Studio
JSON and GIS vector layers, read where mask folders are read (``check``, ``plan``, ``train``, ``evaluate``).

:func:`open_source` recognises an export from ``DataConfig.root`` (and ``vector_labels``) and parses it;
:func:`annotated_samples` rasterises it into class-index masks (:mod:`.cache`) and returns what the discovery
step turns into samples. Class 0 is always ``background``; the other classes come from the export (COCO:
category id order; CVAT: ``labelmap.txt`` / label order; Label Studio: sorted names; vectors: sorted
attribute values). Where two annotations overlap, the later-drawn one wins (:mod:`.raster`).
"""

from __future__ import annotations

import dataclasses
import functools
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unetkit.data.annotations._model import (
    ERROR,
    MAX_ANNOTATION_BYTES,
    AnnotatedImage,
    AnnotationSource,
    Region,
    SourceFinding,
)
from unetkit.data.options import DataConfig
from unetkit.untrusted import UntrustedFileError, load_json_limited

__all__ = [
    "AnnotatedImage", "AnnotationSource", "AnnotatedSamples", "Region", "SourceFinding", "annotated_samples",
    "open_source", "source_classes", "with_source_classes",
]  # fmt: skip


@dataclass
class AnnotatedSamples:
    """What :func:`annotated_samples` hands the discovery step.

    Attributes:
        pairs: ``(key, image file, mask file)`` per usable image, in the export's order.
        source: the parsed export.
        findings: the export's findings plus those of rasterising it.
        summary: per-source counts for ``unetkit check`` (classes, annotations per image and per class,
            images without annotations).
    """

    pairs: list[tuple[str, Path, Path]]
    source: AnnotationSource
    findings: list[SourceFinding] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def open_source(config: DataConfig) -> AnnotationSource | None:
    """The annotation export ``config`` points at, parsed; ``None`` for mask folders and sample lists.

    Recognised: ``vector_labels`` set, or a folder of GeoTIFF scenes with same-stem vector files (GIS);
    a ``.json`` that is COCO or a Label Studio export; a CVAT ``.xml``; a folder holding ``labelmap.txt``
    (CVAT segmentation masks) or ``annotations.xml``; a ``.zip`` of any of these.

    Raises:
        UntrustedFileError / ValueError: an export that is recognised but cannot be read (names the file).
    """
    if not config.root:
        return None
    root = Path(config.root).expanduser()
    if not root.exists():
        return None
    stat = root.stat()
    return _open_cached(str(root), stat.st_mtime_ns, stat.st_size, config.image_dir, config.vector_labels,
                        config.class_field)  # fmt: skip


@functools.lru_cache(maxsize=8)
def _open_cached(
    root_text: str, mtime_ns: int, size: int, image_dir: str, vector_labels: str, class_field: str
) -> AnnotationSource | None:
    root = Path(root_text)
    if vector_labels or (root.is_dir() and _has_scene_vectors(root)):
        from unetkit.data.annotations.vectors import read_vectors

        return read_vectors(root, vector_labels=vector_labels, class_field=class_field)
    if root.is_file() and root.suffix.lower() == ".zip":
        from unetkit.data.annotations.archive import unpack_export

        root = unpack_export(root)
    if root.is_file() and root.suffix.lower() == ".json":
        return _open_json(root, image_dir)
    if root.is_file() and root.suffix.lower() == ".xml":
        from unetkit.data.annotations.cvat import read_cvat_xml

        return read_cvat_xml(root, image_dir=image_dir)
    if root.is_dir():
        return _open_folder(root, image_dir)
    return None


def _open_json(path: Path, image_dir: str) -> AnnotationSource | None:
    from unetkit.data.annotations.coco import is_coco, read_coco
    from unetkit.data.annotations.labelstudio import is_labelstudio, is_labelstudio_min, read_labelstudio

    raw = load_json_limited(path, what="JSON dataset file", max_bytes=MAX_ANNOTATION_BYTES)
    if is_coco(raw):
        return read_coco(path, image_dir=image_dir, raw=raw)
    if is_labelstudio(raw):
        return read_labelstudio(path, image_dir=image_dir, raw=raw)
    if is_labelstudio_min(raw):
        raise UntrustedFileError(f"{path}: a Label Studio JSON-MIN export lacks the image sizes and annotation "
                                 "details; export the project as JSON (not JSON-MIN) and use that file")  # fmt: skip
    return None


def _open_folder(root: Path, image_dir: str) -> AnnotationSource | None:
    if (root / "labelmap.txt").is_file():
        from unetkit.data.annotations.cvat import read_cvat_masks

        return read_cvat_masks(root, image_dir=image_dir)
    if (root / "annotations.xml").is_file():
        from unetkit.data.annotations.cvat import read_cvat_xml

        return read_cvat_xml(root / "annotations.xml", image_dir=image_dir)
    coco = sorted((root / "annotations").glob("*.json")) if (root / "annotations").is_dir() else []
    if len(coco) == 1 and not any(p.suffix.lower() != ".json" for p in (root / "annotations").iterdir()):
        return _open_json(coco[0], image_dir)
    return None


def _has_scene_vectors(root: Path) -> bool:
    from unetkit.data.annotations.vectors import VECTOR_SUFFIXES

    scenes = {p.stem for p in root.iterdir() if p.suffix.lower() in (".tif", ".tiff")}
    return any(p.suffix.lower() in VECTOR_SUFFIXES and p.stem in scenes for p in root.iterdir())


def with_source_classes(config: DataConfig) -> DataConfig:
    """``config`` with ``classes`` set from the export it points at (unchanged for other datasets, or when the
    export cannot be read: the dataset check reports why).

    Raises:
        ValueError: ``config.classes`` was given and differs from the export's classes.
    """
    found = source_classes(config)
    if not found:
        return config
    if config.classes and list(config.classes) != found:
        raise ValueError(f"--classes {','.join(config.classes)} differs from the classes of {config.root}: "
                         f"{','.join(found)} (background first, then the export's order); drop --classes")  # fmt: skip
    return dataclasses.replace(config, classes=found, task="multiclass" if len(found) > 2 else "binary")


def source_classes(config: DataConfig) -> list[str]:
    """The class names of the export ``config`` points at (background first); ``[]`` for other datasets or an
    export that cannot be read (the dataset check reports why)."""
    try:
        source = open_source(config)
    except (ValueError, OSError, ImportError):
        return []
    return list(source.classes) if source is not None else []


def annotated_samples(source: AnnotationSource, *, cache_root: Path | None = None) -> AnnotatedSamples:
    """Rasterise ``source`` (cached, see :mod:`.cache`) into image/mask pairs, with findings and a summary."""
    from unetkit.data.annotations.cache import materialise

    masks, failed = materialise(source, cache_root=cache_root)
    pairs = [(im.key, im.image, masks[im.key]) for im in source.images if im.image is not None and im.key in masks]
    return AnnotatedSamples(pairs=pairs, source=source, findings=[*source.findings, *failed],  # type: ignore[misc]
                            summary=summarise(source))  # fmt: skip


def summarise(source: AnnotationSource) -> dict[str, Any]:
    """Counts for ``unetkit check``: classes, images, annotations per image and per class, images without any."""
    # Images not found are reported as missing, not as unannotated.
    per_image = [len(im.regions) for im in source.images if im.painter is None and im.image is not None]
    per_class: Counter[str] = Counter(source.classes[r.label] for im in source.images for r in im.regions)
    unannotated = [im.name for im in source.images if im.painter is None and im.image is not None and not im.regions]
    out: dict[str, Any] = {
        "format": source.kind,
        "file": str(source.path),
        "classes": list(source.classes),
        "images": len(source.images),
        "images_found": sum(im.image is not None for im in source.images),
        "errors": sum(f.severity == ERROR for f in source.findings),
    }
    if per_image:
        out.update(annotations=sum(per_image), annotations_per_class=dict(per_class),
                   annotations_per_image={"min": min(per_image), "median": statistics.median(per_image),
                                          "max": max(per_image)},
                   images_without_annotations=len(unannotated),
                   images_without_annotations_first=unannotated[:5])  # fmt: skip
    return out

