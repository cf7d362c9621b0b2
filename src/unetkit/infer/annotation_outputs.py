"""``predict --format``: predicted masks also written as annotation files a labelling or GIS tool opens.

After the masks (and probabilities) are written, each is read back and turned into shapes
(:mod:`unetkit.data.annotations.polygons`: pixel-edge polygons with their holes, simplified by a tolerance in
pixels, regions under a minimum area dropped). Files, in ``--out``:

* ``coco``: ``predictions.coco.json`` (one per run; polygons, or RLE for regions with holes / ``--coco-rle``;
  ``score`` = mean class probability);
* ``cvat``: ``predictions.cvat.xml`` ("CVAT for images 1.1": polygons, masks for regions with holes);
* ``labelstudio``: ``predictions.labelstudio.json`` (tasks with a ``predictions`` entry: brush RLE per class,
  ``model_version``, ``score``), importable as pre-annotations;
* ``geojson`` / ``gpkg``: ``<stem>.geojson`` / ``<stem>.gpkg`` per input, in the scene's CRS for GeoTIFFs, with
  ``class``, ``class_id``, ``pixels``, ``area_m2`` and ``mean_prob`` per polygon;
* ``png``: the mask files themselves (always written: the other formats are made from them).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unetkit._io import write_json_atomic, write_text_atomic

FORMATS = ("png", "coco", "cvat", "labelstudio", "geojson", "gpkg")
_SCORED = {"coco", "labelstudio", "geojson", "gpkg"}


@dataclass
class AnnotationOutputs:
    """What ``--format`` asks for: ``formats``; ``simplify`` tolerance and ``min_area`` in pixels; ``rle``: COCO RLE
    for every region; ``model_version`` for Label Studio; ``names``: Label Studio's (from_name, to_name)."""

    formats: tuple[str, ...] = ("png",)
    simplify: float = 0.0
    min_area: float = 0.0
    rle: bool = False
    model_version: str = "unetkit"
    names: tuple[str, str] = ("tag", "image")

    @property
    def needs_probabilities(self) -> bool:
        """Whether a format records scores (then the probabilities are written too, ``<stem>_prob.tif``)."""
        return bool(_SCORED & set(self.formats))

    @property
    def extra(self) -> bool:
        return any(f != "png" for f in self.formats)


def parse_formats(text: str) -> tuple[str, ...]:
    """``"png,coco"`` -> ``("png", "coco")``.

    Raises:
        ValueError: an unknown format (lists the valid ones).
    """
    formats = tuple(dict.fromkeys(f.strip().lower() for f in text.split(",") if f.strip()))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"--format {text!r}: unknown format {', '.join(unknown) or '(none)'}; valid: {', '.join(FORMATS)}")
    return formats


def write_annotation_outputs(
    predicted: Sequence[tuple[Path, Path, Path | None]], *, out: Path, classes: Sequence[str], options: AnnotationOutputs
) -> list[Path]:
    """Write the annotation files of ``predicted`` = ``(input, mask file, probabilities file or None)`` per image.

    Returns:
        The files written.
    """
    from unetkit.data.annotations import writers
    from unetkit.data.annotations.polygons import mask_shapes
    from unetkit.data.annotations.vector_out import DRIVERS, write_features

    shape_options = writers.ShapeOptions(simplify=options.simplify, min_area=options.min_area, rle=options.rle)
    coco: dict = {"images": [], "annotations": [], "categories": writers.coco_categories(classes)}
    tasks, cvat, written = [], [], []
    for image_id, (source, mask_file, prob_file) in enumerate(predicted, start=1):
        labels, meta = _read_labels(mask_file)
        prob = _read_prob(prob_file)
        if "coco" in options.formats:
            coco["images"].append({"id": image_id, "file_name": source.name, "height": labels.shape[0],
                                   "width": labels.shape[1]})  # fmt: skip
            coco["annotations"] += writers.coco_annotations(labels, image_id=image_id, first_id=len(coco["annotations"]) + 1,
                                                            options=shape_options, probabilities=prob)  # fmt: skip
        if "labelstudio" in options.formats:
            tasks.append(writers.labelstudio_task(labels, image=source.as_posix(), classes=classes, probabilities=prob,
                                                  model_version=options.model_version, names=options.names))  # fmt: skip
        if "cvat" in options.formats:
            cvat.append(writers.cvat_image(labels, image_id=image_id - 1, name=source.name, classes=classes,
                                           options=shape_options))  # fmt: skip
        for fmt in ("geojson", "gpkg"):
            if fmt in options.formats:
                shapes = mask_shapes(labels, simplify=options.simplify, min_area=options.min_area, probabilities=prob)
                path = out / (_stem(mask_file) + DRIVERS[fmt][1])
                written.append(write_features(path, shapes=shapes, classes=list(classes), fmt=fmt,
                                              transform=meta.get("transform"), crs=meta.get("crs")))  # fmt: skip
    if "coco" in options.formats:
        write_json_atomic(out / "predictions.coco.json", coco)
        written.append(out / "predictions.coco.json")
    if "labelstudio" in options.formats:
        write_text_atomic(out / "predictions.labelstudio.json", json.dumps(tasks))
        written.append(out / "predictions.labelstudio.json")
    if "cvat" in options.formats:
        write_text_atomic(out / "predictions.cvat.xml", writers.cvat_document(cvat, classes=classes))
        written.append(out / "predictions.cvat.xml")
    return written


def _read_labels(path: Path) -> tuple[np.ndarray, dict]:
    from unetkit.data.io import read_image

    image = read_image(path)
    array = np.asarray(image.array)
    if array.ndim != 3 or array.shape[0] != 1:
        raise ValueError(f"{path}: annotation formats need a 2D mask, got shape {array.shape}")
    return array[0].astype(np.int64), dict(image.meta)


def _read_prob(path: Path | None) -> np.ndarray | None:
    if path is None or not path.is_file():
        return None
    from unetkit.data.io import read_image

    return np.asarray(read_image(path).array, dtype=np.float32)


def _stem(path: Path) -> str:
    from unetkit.data.io import full_suffix

    return path.name[: -len(full_suffix(path))] if full_suffix(path) else path.stem
