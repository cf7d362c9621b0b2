"""Paint annotations into a class-index mask, and check polygons before painting them.

Overlaps are resolved by painting order: regions are painted in the order the export lists them (CVAT XML:
by ``z_order``, then file order), each one over the ones before, so **the later-drawn annotation wins** where
two overlap. That is what the annotation tools show their users (the shape drawn last is on top).

Polygons and RLE are rasterised by pycocotools (the COCO reference implementation), so a COCO file means here
what it means to the COCO API.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from unetkit.data.annotations._model import Region


class _Quiet:
    """pycocotools' decoder warns under numpy 2 (its ``__array__`` lacks ``copy=``) on every call; the result
    is right, and a user cannot act on the warning."""

    def __init__(self, api: Any) -> None:
        self._api = api

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self._api, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="__array__ implementation", category=DeprecationWarning)
                return fn(*args, **kwargs)

        return call


def _mask_api() -> Any:
    try:
        from pycocotools import mask as mask_api
    except ImportError:
        raise ImportError(
            "annotation files (COCO, CVAT, Label Studio) need pycocotools and shapely: "
            "pip install 'unetkit[labels]'"
        ) from None
    return _Quiet(mask_api)


def region_mask(region: Region, *, height: int, width: int) -> np.ndarray:
    """The boolean ``(height, width)`` mask of one region.

    Raises:
        ValueError: an RLE whose size differs from the image's, or counts that do not decode (names the item).
    """
    if region.bitmap is not None:
        if region.bitmap.shape != (height, width):
            raise ValueError(f"{region.item}: mask is {region.bitmap.shape[1]}x{region.bitmap.shape[0]}, "
                             f"the image {width}x{height}")  # fmt: skip
        return region.bitmap.astype(bool)
    api = _mask_api()
    if region.polygons is not None:
        rles = api.frPyObjects([list(map(float, p)) for p in region.polygons], height, width)
        return np.asarray(api.decode(api.merge(rles)), dtype=bool)
    return decode_rle(region.rle or {}, height=height, width=width, item=region.item)


def decode_rle(rle: dict[str, Any], *, height: int, width: int, item: str) -> np.ndarray:
    """Decode a COCO RLE (``counts`` as a compressed string or an uncompressed list) to a boolean mask.

    Raises:
        ValueError: malformed RLE, a size that differs from ``(height, width)``, or counts that overrun it.
    """
    api = _mask_api()
    size, counts = rle.get("size"), rle.get("counts")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size)):
        raise ValueError(f"{item}: RLE 'size' must be [height, width], got {size!r}")
    if list(size) != [height, width]:
        raise ValueError(f"{item}: RLE size {size} differs from the image's [{height}, {width}]")
    if isinstance(counts, list):
        if not all(isinstance(c, int) and c >= 0 for c in counts) or sum(counts) != height * width:
            raise ValueError(f"{item}: RLE counts must be non-negative integers summing to {height}x{width}")
        compressed = api.frPyObjects({"size": size, "counts": counts}, height, width)
    elif isinstance(counts, str):
        compressed = {"size": size, "counts": counts.encode("ascii", "replace")}
    else:
        raise ValueError(f"{item}: RLE 'counts' must be a string or a list of integers")
    try:
        out = np.asarray(api.decode(compressed), dtype=bool)
    except Exception as err:  # pycocotools raises plain exceptions on corrupt strings
        raise ValueError(f"{item}: RLE counts do not decode ({err})") from None
    if out.shape != (height, width):
        raise ValueError(f"{item}: RLE decodes to {out.shape}, not ({height}, {width})")
    return out


def paint(regions: Sequence[Region], *, height: int, width: int) -> np.ndarray:
    """The uint8 class-index mask of ``regions`` painted in order (later on top); 0 where nothing is drawn.

    Raises:
        ValueError: a region that cannot be decoded (see :func:`region_mask`).
    """
    out = np.zeros((height, width), dtype=np.uint8)
    for region in regions:
        out[region_mask(region, height=height, width=width)] = region.label
    return out


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO's compressed RLE of a boolean ``(H, W)`` mask, ``counts`` as a string (JSON-ready)."""
    api = _mask_api()
    rle = api.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def polygon_problems(ring: Sequence[float], *, height: int, width: int) -> tuple[str | None, str | None]:
    """``(invalid, outside)``: why a flat ``[x0, y0, ...]`` ring is not a valid polygon (shapely's reason,
    e.g. ``Self-intersection[12 30]``), and whether it lies ``partly`` or ``entirely`` outside the image;
    ``None`` where it is fine."""
    from shapely import Polygon, box
    from shapely.validation import explain_validity

    pts = np.asarray(ring, dtype=float).reshape(-1, 2)
    if len(pts) < 3:
        return "fewer than 3 points", None
    shape = Polygon(pts)
    invalid = None if shape.is_valid else explain_validity(shape)
    frame = box(0, 0, width, height)
    x0, y0, x1, y1 = pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height or (shape.is_valid and not shape.intersects(frame)):
        return invalid, "entirely"
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        return invalid, "partly"
    return invalid, None
