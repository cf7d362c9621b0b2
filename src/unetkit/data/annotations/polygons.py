"""Masks to polygons (holes kept) and back: what prediction writers and format round trips share.

Polygons are traced along pixel edges (rasterio's ``features.shapes``, 4-connected regions), so a polygon in
pixel coordinates covers exactly its pixels before simplification; coordinates are pixel corners, with
``(0, 0)`` the image's top-left corner, x to the right and y down.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Shape:
    """One connected region of one class.

    Attributes:
        label: the class index.
        polygon: a shapely ``Polygon`` (exterior + holes) in pixel coordinates.
        pixels: how many pixels the region covers (before simplification).
        score: the mean probability of ``label`` over the region's pixels (``None`` without probabilities).
    """

    label: int
    polygon: Any
    pixels: int
    score: float | None = None


def mask_shapes(
    labels: np.ndarray,
    *,
    simplify: float = 0.0,
    min_area: float = 0.0,
    probabilities: np.ndarray | None = None,
    skip: tuple[int, ...] = (0, 255),
) -> list[Shape]:
    """Connected regions of every class as polygons with their holes.

    Args:
        labels: ``(H, W)`` integer class indices.
        simplify: Douglas-Peucker tolerance in pixels (0: exact pixel outlines); topology is preserved.
        min_area: drop regions covering fewer pixels than this.
        probabilities: ``(C, H, W)`` class probabilities, for each shape's ``score``.
        skip: values not turned into polygons (background, ignore).

    Returns:
        The shapes, classes ascending, then in the order rasterio traces them.

    Example:
        >>> [s.pixels for s in mask_shapes(np.array([[0, 1], [1, 1]]))]
        [3]
    """
    from rasterio import features
    from scipy import ndimage
    from shapely.geometry import shape as to_shape

    labels = np.asarray(labels)
    out: list[Shape] = []
    for label in np.unique(labels):
        if int(label) in skip:
            continue
        components, n = ndimage.label(labels == label)  # 4-connected, as shapes() traces them below
        pixels = np.bincount(components.ravel(), minlength=n + 1)
        scores = None
        if probabilities is not None:
            # Component 0 (the other classes) may be empty: index the regions only, 0 padded in front.
            scores = np.concatenate([[0.0], ndimage.mean(probabilities[int(label)], components, index=np.arange(1, n + 1))])
        traced = features.shapes(components.astype(np.int32), mask=components > 0, connectivity=4)
        for geom, value in traced:
            index = int(value)
            if pixels[index] < max(min_area, 1):
                continue
            polygon = to_shape(geom)
            if simplify > 0:
                polygon = polygon.simplify(simplify, preserve_topology=True)
            score = None if scores is None else float(scores[index])
            out.append(Shape(label=int(label), polygon=polygon, pixels=int(pixels[index]), score=score))
    return out


def rasterise_shapes(shapes: list[tuple[Any, int]], *, height: int, width: int) -> np.ndarray:
    """Paint ``(polygon, label)`` pairs (pixel coordinates) into a uint8 ``(height, width)`` mask, in order;
    a pixel belongs to a polygon when its centre lies inside (rasterio's rule)."""
    from rasterio import features

    if not shapes:
        return np.zeros((height, width), dtype=np.uint8)
    return features.rasterize(shapes, out_shape=(height, width), fill=0, dtype="uint8")
