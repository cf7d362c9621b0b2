"""Predicted regions as vector features: polygons in the scene's CRS with class, area and mean probability.

For a georeferenced input (a GeoTIFF with a CRS and transform) the pixel-edge polygons of
:func:`unetkit.data.annotations.polygons.mask_shapes` are moved onto the scene's grid; ``area_m2`` is the
polygon's area in square metres (planar in a projected CRS in metres, geodesic on the WGS84 ellipsoid in a
geographic CRS). Without a CRS, coordinates stay in pixels and ``area_m2`` is empty. Files are written by
pyogrio (GeoJSON, GeoPackage) to a temporary name, then renamed.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from unetkit._io import atomic_path
from unetkit.data.annotations.polygons import Shape

DRIVERS = {"geojson": ("GeoJSON", ".geojson"), "gpkg": ("GPKG", ".gpkg")}


def to_scene(shapes: list[Shape], transform: Any) -> list[Any]:
    """The shapes' polygons mapped from pixel corners to the scene's coordinates by its affine ``transform``
    (``None``: unchanged)."""
    from shapely import affinity

    if transform is None:
        return [s.polygon for s in shapes]
    a, b, c, d, e, f = (float(v) for v in tuple(transform)[:6])
    return [affinity.affine_transform(s.polygon, [a, b, d, e, c, f]) for s in shapes]


def areas_m2(polygons: list[Any], crs: Any) -> list[float | None]:
    """Each polygon's area in m² in ``crs`` (``None`` for every polygon when the CRS is missing or not in metres)."""
    if crs is None:
        return [None] * len(polygons)
    from pyproj import CRS, Geod

    crs = CRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") else crs)
    if crs.is_geographic:
        geod = Geod(ellps="WGS84")
        return [abs(geod.geometry_area_perimeter(p)[0]) for p in polygons]
    units = {axis.unit_name for axis in crs.axis_info}
    if units <= {"metre", "meter"}:
        return [float(p.area) for p in polygons]
    return [None] * len(polygons)


def write_features(
    path: Path, *, shapes: list[Shape], classes: list[str], transform: Any = None, crs: Any = None, fmt: str = "geojson"
) -> Path:
    """Write one feature per shape: fields ``class``, ``class_id``, ``pixels``, and ``area_m2`` (a CRS in metres or
    degrees) and ``mean_prob`` (shapes with scores) where they are known.

    Args:
        path: the output file.
        shapes: the regions (pixel coordinates).
        classes: class names by index.
        transform / crs: the scene's affine transform and CRS (``None``: pixel coordinates, no CRS).
        fmt: ``geojson`` or ``gpkg``.
    """
    import pyogrio.raw
    import shapely

    driver, _ = DRIVERS[fmt]
    polygons = to_scene(shapes, transform)
    areas = areas_m2(polygons, crs)
    fields = {
        "class": np.array([classes[s.label] if s.label < len(classes) else str(s.label) for s in shapes], dtype=object),
        "class_id": np.array([s.label for s in shapes], dtype=np.int32),
        "pixels": np.array([s.pixels for s in shapes], dtype=np.int64),
    }
    if shapes and all(a is not None for a in areas):
        fields["area_m2"] = np.array(areas, dtype=np.float64)
    if shapes and all(s.score is not None for s in shapes):
        fields["mean_prob"] = np.array([s.score for s in shapes], dtype=np.float64)
    wkt = crs.to_wkt() if crs is not None and hasattr(crs, "to_wkt") else crs
    with atomic_path(path) as tmp, warnings.catch_warnings():
        # Without a CRS (plain images) pyogrio warns; pixel coordinates are what is meant then.
        warnings.filterwarnings("ignore", message="'crs' was not provided", category=UserWarning)
        tmp.unlink(missing_ok=True)  # GDAL refuses to create over an existing (empty) file
        pyogrio.raw.write(tmp, geometry=np.array([shapely.to_wkb(p) for p in polygons], dtype=object),
                          field_data=list(fields.values()), fields=list(fields), crs=wkt, driver=driver,
                          geometry_type="Polygon", layer=re.sub(r"\W+", "_", path.stem) or "predictions")  # fmt: skip
    return path
