"""Label Studio results from a predicted label map and back: brush RLE or polygons per the labelling config,
and an annotation's results painted into a class-index mask.

Brush masks use unetkit's one brush RLE codec (:mod:`unetkit.data.annotations.brush_rle`); polygons are the
mask's region outlines (:mod:`unetkit.data.annotations.polygons`) in percent of the image's width and height,
as Label Studio stores them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from unetkit.serve.label_studio.labelling_config import LabellingConfig, MaskTag


class BadAnnotation(ValueError):
    """An annotation result that cannot become a mask; the message names the result and the problem."""


def results_for(labels: np.ndarray, *, config: LabellingConfig, classes: Sequence[str]) -> list[dict[str, Any]]:
    """Label Studio results for a ``(H, W)`` label map: one brush result per predicted class and brush tag,
    one polygon result per region and polygon tag.

    Args:
        labels: class indices (0 = background).
        config: the project's labelling config.
        classes: the run's class names, background first.
    """
    from unetkit.data.annotations.brush_rle import mask_to_rle

    mapping = config.class_map(classes)
    out: list[dict[str, Any]] = []
    h, w = labels.shape
    for tag in config.tags:
        names = _names_by_class(tag, mapping)
        if tag.kind == "polygonlabels":
            out += _polygon_results(labels, tag, names)
            continue
        for label in (int(v) for v in np.unique(labels) if int(v) in names):
            out.append({**_result_head(tag, h, w, f"unetkit-{tag.name}-{label}"),
                        "value": {"format": "rle", "rle": mask_to_rle(labels == label), "brushlabels": [names[label]]}})  # fmt: skip
    return out


def _names_by_class(tag: MaskTag, mapping: dict[str, int]) -> dict[int, str]:
    """Class index -> the tag's label name for it (the config's own spelling)."""
    return {mapping[label]: label for label in tag.labels}


def _result_head(tag: MaskTag, h: int, w: int, rid: str) -> dict[str, Any]:
    return {"id": rid, "from_name": tag.name, "to_name": tag.to_name, "type": tag.kind, "original_width": w,
            "original_height": h, "image_rotation": 0}  # fmt: skip


def _polygon_results(labels: np.ndarray, tag: MaskTag, names: dict[int, str]) -> list[dict[str, Any]]:
    from unetkit.data.annotations.polygons import mask_shapes

    h, w = labels.shape
    out = []
    for k, shape in enumerate(mask_shapes(labels, simplify=0.5, skip=tuple(v for v in range(256) if v not in names))):
        points = np.asarray(shape.polygon.exterior.coords)[:-1] * [100.0 / w, 100.0 / h]
        out.append({**_result_head(tag, h, w, f"unetkit-{tag.name}-p{k}"),
                    "value": {"points": points.round(4).tolist(), "closed": True, "polygonlabels": [names[shape.label]]}})  # fmt: skip
    return out


def annotation_mask(results: Sequence[Any], *, config: LabellingConfig, classes: Sequence[str],
                    size: tuple[int, int]) -> np.ndarray:  # fmt: skip
    """The ``(H, W)`` uint8 class-index mask of an annotation's results (later results painted on top).

    Args:
        results: the annotation's ``result`` list.
        config: the project's labelling config (its label names give the classes).
        classes: the run's class names, background first.
        size: the image's ``(height, width)``.

    Raises:
        BadAnnotation: a result with an unknown label, an empty or malformed brush RLE, a polygon with fewer
            than three points, or an annotation without any mask result.
    """
    mapping = config.class_map(classes)
    h, w = size
    mask = np.zeros((h, w), dtype=np.uint8)
    painted = 0
    for k, result in enumerate(results):
        if not isinstance(result, dict) or result.get("type") not in ("brushlabels", "polygonlabels"):
            continue
        raw = result.get("value")
        value: dict[str, Any] = raw if isinstance(raw, dict) else {}
        item = f"result {result.get('id', k)}"
        kind = str(result["type"])
        names = value.get(kind) or []
        if not names or names[0] not in mapping:
            raise BadAnnotation(f"{item}: label {names[:1] or '(none)'} is not in the labelling config")
        region = _brush(value, item, h, w) if kind == "brushlabels" else _polygon(value, item, h, w)
        mask[region] = mapping[names[0]]
        painted += 1
    if not painted:
        raise BadAnnotation("the annotation has no brush or polygon result to learn from")
    return mask


def _brush(value: dict[str, Any], item: str, h: int, w: int) -> np.ndarray:
    from unetkit.data.annotations.brush_rle import rle_to_mask

    rle = value.get("rle")
    if not isinstance(rle, list) or not rle:
        raise BadAnnotation(f"{item}: empty brush RLE (no 'rle' values)")
    try:
        return rle_to_mask(rle, height=h, width=w)
    except ValueError as err:
        raise BadAnnotation(f"{item}: malformed brush RLE ({err})") from err


def _polygon(value: dict[str, Any], item: str, h: int, w: int) -> np.ndarray:
    """A polygon's pixels, rasterised as every polygon annotation unetkit reads (pycocotools)."""
    from unetkit.data.annotations import Region
    from unetkit.data.annotations.raster import region_mask

    try:
        points = np.asarray(value.get("points"), dtype=float).reshape(-1, 2) * [w / 100.0, h / 100.0]
    except (TypeError, ValueError) as err:
        raise BadAnnotation(f"{item}: polygon points are not [x, y] pairs") from err
    if len(points) < 3 or not np.isfinite(points).all():
        raise BadAnnotation(f"{item}: a polygon needs at least three finite points")
    return region_mask(Region(label=1, item=item, polygons=[points.ravel().tolist()]), height=h, width=w)
