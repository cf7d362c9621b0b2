"""GIS vector labels for GeoTIFF scenes: rasterised on each scene's own grid.

Two layouts: a folder of scenes (``*.tif``) each with a vector file of the same stem (``scene.geojson``,
``.gpkg`` or ``.shp`` beside it), or one vector file for every scene (``--vector-labels FILE``). A feature's
class is the value of ``--class-field`` (classes: ``background``, then the values sorted as text); without it
every feature is one ``foreground`` class. Features are reprojected from the vector file's CRS to the scene's
(pyproj, x/y axis order) and burnt in file order (later features on top), a pixel belonging to a feature when
its centre lies inside (rasterio's rule).

Errors name the file: a vector file without a CRS, a scene without one, a per-scene file that does not
overlap its scene, a single file that overlaps no scene, a missing class field. With one file for all scenes,
a scene that no feature touches is skipped with a warning (unlabelled, not background).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unetkit.data.annotations._model import ERROR, WARNING, AnnotatedImage, AnnotationSource, MiB
from unetkit.untrusted import UntrustedFileError, read_bytes_limited

VECTOR_SUFFIXES = (".geojson", ".json", ".gpkg", ".shp")
SCENE_SUFFIXES = (".tif", ".tiff")
MAX_VECTOR_BYTES = 2048 * MiB


@dataclass
class VectorLayer:
    """A vector file's features: shapely ``geometries``, their ``values`` of the class field (or ``None``), the
    ``crs`` (WKT / authority string) and the file's digest."""

    path: Path
    geometries: list[Any]
    values: list[Any]
    crs: str
    digest: str


def read_layer(path: Path, *, class_field: str = "") -> VectorLayer:
    """Read a vector file's geometries, class values and CRS (pyogrio).

    Raises:
        UntrustedFileError: unreadable, too large, no CRS, or no such class field (lists the fields).
    """
    try:
        import pyogrio.raw
        import shapely
        from pyogrio.errors import DataLayerError, DataSourceError
    except ImportError:
        raise ImportError("vector labels need pyogrio, shapely and rasterio: pip install 'unetkit[labels]'") from None
    digest = hashlib.sha256(read_bytes_limited(path, what="vector file", max_bytes=MAX_VECTOR_BYTES)).hexdigest()
    try:
        meta, _, wkb, fields = pyogrio.raw.read(path)
    except (DataSourceError, DataLayerError, OSError) as err:
        raise UntrustedFileError(f"{path}: not a readable vector file ({type(err).__name__}: {err})") from None
    if not meta.get("crs"):
        raise UntrustedFileError(f"{path}: the vector file has no CRS; set one (e.g. in QGIS: Layer CRS) and save again")
    names = [str(n) for n in meta.get("fields", [])]
    if class_field and class_field not in names:
        raise UntrustedFileError(f"{path}: no attribute {class_field!r} (attributes: {', '.join(names) or 'none'})")
    values = list(fields[names.index(class_field)]) if class_field else [None] * len(wkb)
    geoms = [shapely.from_wkb(g) if g is not None else None for g in wkb]
    # Points and lines have no area: they would burn one-pixel traces. Only polygons label pixels.
    geoms = [g if g is not None and g.geom_type in ("Polygon", "MultiPolygon") else None for g in geoms]
    return VectorLayer(path=path, geometries=geoms, values=values, crs=str(meta["crs"]), digest=digest)


def read_vectors(root: Path, *, vector_labels: str = "", class_field: str = "") -> AnnotationSource:
    """Parse GeoTIFF scenes under ``root`` with their vector labels (see the module docstring).

    Raises:
        UntrustedFileError: no scenes, a missing / unreadable vector file, or one without a CRS.
    """
    scenes = [p for p in sorted(root.rglob("*")) if p.suffix.lower() in SCENE_SUFFIXES and p.is_file()] if root.is_dir() else [root]
    if not scenes:
        raise UntrustedFileError(f"{root}: no GeoTIFF scenes (*.tif) to go with the vector labels")
    shared = None
    if vector_labels:
        given = Path(vector_labels).expanduser()
        shared = read_layer(given if given.is_absolute() or given.exists() else root / given, class_field=class_field)
    layers = {s: shared or _scene_layer(s, class_field) for s in scenes}
    found = [layer for layer in layers.values() if layer is not None]
    values = _sorted_values({str(v) for layer in found for v in layer.values if v is not None})
    classes = ["background", *(values if class_field else ["foreground"])]
    digest = hashlib.sha256(f"{class_field};{sorted({la.digest for la in found})}".encode())
    source = AnnotationSource(kind="vectors", path=Path(vector_labels) if vector_labels else root, classes=classes,
                              images=[])  # fmt: skip
    for scene, layer in layers.items():
        digest.update(f"{scene}:{scene.stat().st_size}:{scene.stat().st_mtime_ns};".encode())
        if layer is None:
            continue
        image = _scene(scene, root, layer, classes, source, shared=shared is not None)
        if image is not None:
            source.images.append(image)
    if shared is not None and not source.images:
        source.add(ERROR, "no_overlap", f"{shared.path}: no feature overlaps any of the {len(scenes)} scene(s) "
                   "(wrong CRS on the file, or labels of another area?)", [str(shared.path)])  # fmt: skip
    source.digest = digest.hexdigest()
    return source


def _sorted_values(values: set[str]) -> list[str]:
    """Class values in numeric order when they are all numbers (``2`` before ``10``), else as text."""
    try:
        return sorted(values, key=float)
    except ValueError:
        return sorted(values)


def _scene_layer(scene: Path, class_field: str) -> VectorLayer | None:
    for suffix in VECTOR_SUFFIXES:
        candidate = scene.with_suffix(suffix)
        if candidate.is_file():
            return read_layer(candidate, class_field=class_field)
    return None


def _scene(scene: Path, root: Path, layer: VectorLayer, classes: list[str], source: AnnotationSource, *,
           shared: bool) -> AnnotatedImage | None:  # fmt: skip
    from shapely import box

    from unetkit.data.geotiff import scene_grid

    grid = scene_grid(scene)
    crs, transform, height, width, bounds = (grid[k] for k in ("crs", "transform", "height", "width", "bounds"))
    key = scene.relative_to(root).with_suffix("").as_posix() if root.is_dir() else scene.stem
    if crs is None:
        source.add(ERROR, "no_crs", f"{scene}: the scene has no CRS, so its vector labels cannot be placed", [str(scene)])
        return None
    geoms = _to_crs(layer.geometries, layer.crs, crs.to_wkt())
    frame = box(*bounds)
    labels = [classes.index(str(v)) if v is not None else 1 for v in layer.values]
    shapes = [(g, lab) for g, lab in zip(geoms, labels, strict=True) if g is not None and not g.is_empty
              and g.intersects(frame)]  # fmt: skip
    if not shapes:
        where = f"scene bounds {tuple(round(b, 2) for b in bounds)} in {crs.to_string()}"
        if shared:
            source.add(WARNING, "scene_unlabelled", f"{scene.name}: no feature of {layer.path.name} touches the "
                       f"scene ({where}); skipped", [str(scene)])  # fmt: skip
        else:
            source.add(ERROR, "no_overlap", f"{layer.path}: no feature overlaps scene {scene.name} ({where}; "
                       f"the file's CRS is {_short_crs(layer.crs)})", [str(layer.path)])  # fmt: skip
        return None
    return AnnotatedImage(key=key, name=scene.name, image=scene, height=height, width=width,
                          painter=_burner(shapes, transform, height, width))  # fmt: skip


def _to_crs(geoms: list[Any], src: str, dst: str) -> list[Any]:
    from pyproj import CRS, Transformer
    from shapely import transform

    if CRS.from_user_input(src) == CRS.from_user_input(dst):
        return geoms
    project = Transformer.from_crs(CRS.from_user_input(src), CRS.from_user_input(dst), always_xy=True)

    def move(xy: np.ndarray) -> np.ndarray:
        x, y = project.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    return [None if g is None else transform(g, move) for g in geoms]


def _burner(shapes: list[tuple[Any, int]], transform: Any, height: int, width: int) -> Callable[[], np.ndarray]:
    def burn() -> np.ndarray:
        from rasterio import features

        return features.rasterize(shapes, out_shape=(height, width), transform=transform, fill=0, dtype="uint8")

    return burn


def _short_crs(crs: str) -> str:
    from pyproj import CRS

    found = CRS.from_user_input(crs).to_epsg()
    return f"EPSG:{found}" if found else crs[:60]
