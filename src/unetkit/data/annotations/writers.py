"""Label masks written as annotation exports: COCO, Label Studio, CVAT XML (what ``predict --format`` writes).

Each function turns one image's class-index mask (and optional probabilities) into that format's records;
the caller collects them over images and writes the file (atomically). Polygons come from
:func:`unetkit.data.annotations.polygons.mask_shapes` (pixel-edge outlines, holes kept, optional
simplification and minimum area).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from unetkit.data.annotations.polygons import Shape, mask_shapes
from unetkit.data.annotations.raster import encode_rle


@dataclass
class ShapeOptions:
    """How masks become shapes: ``simplify`` tolerance and ``min_area`` in pixels; ``rle``: COCO RLE for
    every region (else polygons, and RLE only for regions with holes, which COCO polygons cannot hold)."""

    simplify: float = 0.0
    min_area: float = 0.0
    rle: bool = False


def coco_categories(classes: Sequence[str]) -> list[dict[str, Any]]:
    """COCO ``categories`` for ``classes`` (background first, not listed): ids 1..K-1 in class order."""
    return [{"id": i, "name": name, "supercategory": ""} for i, name in enumerate(classes) if i > 0]


def coco_annotations(
    labels: np.ndarray,
    *,
    image_id: int,
    first_id: int,
    options: ShapeOptions,
    probabilities: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """COCO ``annotations`` of one image: one per connected region (category id = class index).

    Args:
        labels: ``(H, W)`` class indices.
        image_id / first_id: the image's id and the first annotation id to use.
        options: simplification, minimum area, RLE.
        probabilities: ``(C, H, W)``, for each annotation's ``score`` (mean class probability).
    """
    out = []
    for n, shape in enumerate(mask_shapes(labels, simplify=options.simplify, min_area=options.min_area,
                                          probabilities=probabilities)):  # fmt: skip
        x0, y0, x1, y1 = shape.polygon.bounds
        ann: dict[str, Any] = {
            "id": first_id + n, "image_id": image_id, "category_id": shape.label, "iscrowd": 0,
            "area": float(shape.pixels), "bbox": [x0, y0, x1 - x0, y1 - y0],
        }  # fmt: skip
        if options.rle or len(shape.polygon.interiors):
            ann["segmentation"] = encode_rle(_region(labels, shape))
        else:
            ann["segmentation"] = [_flat(shape.polygon.exterior.coords)]
        if shape.score is not None:
            ann["score"] = shape.score
        out.append(ann)
    return out


def _region(labels: np.ndarray, shape: Shape) -> np.ndarray:
    from unetkit.data.annotations.polygons import rasterise_shapes

    return rasterise_shapes([(shape.polygon, 1)], height=labels.shape[0], width=labels.shape[1]) > 0


def _flat(coords: Any) -> list[float]:
    pts = np.asarray(coords, dtype=float)[:-1]  # shapely repeats the first point at the end
    return [round(float(v), 3) for v in pts.ravel()]


def labelstudio_task(
    labels: np.ndarray,
    *,
    image: str,
    classes: Sequence[str],
    model_version: str,
    probabilities: np.ndarray | None = None,
    names: tuple[str, str] = ("tag", "image"),
) -> dict[str, Any]:
    """A Label Studio task with one prediction: a ``brushlabels`` result (brush RLE) per predicted class.

    Args:
        labels: ``(H, W)`` class indices.
        image: the task's ``data.image`` (a path or URL Label Studio can open).
        classes: class names by index (background first, not exported).
        model_version: recorded in the prediction (Label Studio shows and filters by it).
        probabilities: ``(C, H, W)``; each result's ``score`` is its class's mean probability over its pixels,
            the prediction's ``score`` their pixel-weighted mean.
        names: the labeling config's ``from_name`` (the BrushLabels tag) and ``to_name`` (the Image tag).
    """
    from unetkit.data.annotations.brush_rle import mask_to_rle

    h, w = labels.shape
    results, weights, scores = [], [], []
    for label in (int(v) for v in np.unique(labels) if 0 < v < len(classes)):
        region = labels == label
        result: dict[str, Any] = {
            "id": f"unetkit-{label}", "from_name": names[0], "to_name": names[1], "type": "brushlabels",
            "original_width": w, "original_height": h, "image_rotation": 0,
            "value": {"format": "rle", "rle": mask_to_rle(region), "brushlabels": [classes[label]]},
        }  # fmt: skip
        if probabilities is not None:
            result["score"] = float(probabilities[label][region].mean())
            scores.append(result["score"])
            weights.append(int(region.sum()))
        results.append(result)
    prediction: dict[str, Any] = {"model_version": model_version, "result": results}
    if scores:
        prediction["score"] = float(np.average(scores, weights=weights))
    return {"data": {"image": image}, "predictions": [prediction]}


def cvat_image(labels: np.ndarray, *, image_id: int, name: str, classes: Sequence[str], options: ShapeOptions) -> str:
    """One ``<image>`` element of a "CVAT for images 1.1" file: a ``<polygon>`` per region, or a ``<mask>``
    (CVAT's RLE in the region's box) for regions with holes, which CVAT polygons cannot hold."""
    from xml.sax.saxutils import quoteattr

    h, w = labels.shape
    lines = [f"  <image id={quoteattr(str(image_id))} name={quoteattr(name)} width=\"{w}\" height=\"{h}\">"]
    for shape in mask_shapes(labels, simplify=options.simplify, min_area=options.min_area):
        label = quoteattr(classes[shape.label] if shape.label < len(classes) else str(shape.label))
        if len(shape.polygon.interiors) or options.rle:
            region = _region(labels, shape)
            rle, left, top, bw, bh = cvat_rle(region)
            lines.append(f"    <mask label={label} source=\"auto\" occluded=\"0\" rle=\"{rle}\" left=\"{left}\" "
                         f"top=\"{top}\" width=\"{bw}\" height=\"{bh}\" z_order=\"0\"></mask>")  # fmt: skip
        else:
            pts = ";".join(f"{x:.2f},{y:.2f}" for x, y in np.asarray(shape.polygon.exterior.coords)[:-1])
            lines.append(f"    <polygon label={label} source=\"auto\" occluded=\"0\" points=\"{pts}\" z_order=\"0\">"
                         "</polygon>")  # fmt: skip
    lines.append("  </image>")
    return "\n".join(lines)


def cvat_document(images: Sequence[str], *, classes: Sequence[str]) -> str:
    """A "CVAT for images 1.1" XML document around ``<image>`` elements from :func:`cvat_image`."""
    from xml.sax.saxutils import escape

    labels = "".join(f"<label><name>{escape(n)}</name><type>any</type><attributes></attributes></label>"
                     for n in classes[1:])  # fmt: skip
    head = ["<?xml version=\"1.0\" encoding=\"utf-8\"?>", "<annotations>", "  <version>1.1</version>",
            f"  <meta><task><labels>{labels}</labels></task></meta>"]  # fmt: skip
    return "\n".join([*head, *images, "</annotations>"]) + "\n"


def cvat_rle(region: np.ndarray) -> tuple[str, int, int, int, int]:
    """CVAT XML's mask RLE of a boolean region: ``(runs, left, top, width, height)``, the runs alternating
    inside the region's bounding box row by row, starting with background (a leading 0 when it starts set)."""
    ys, xs = np.nonzero(region)
    top, left, bottom, right = int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1
    flat = region[top:bottom, left:right].ravel().astype(np.int8)
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    runs = runs if flat[0] == 0 else [0, *runs]
    return ", ".join(map(str, runs)), left, top, right - left, bottom - top
