"""COCO JSON (``images`` / ``annotations`` / ``categories``) as a labelled dataset.

* **Classes**: ``background`` is class 0; then every category, in ascending category ``id`` order (the order
  COCO files list them in and exporters number them: CVAT and Label Studio start at 1, Detectron2-style
  files at 0). A category named ``background`` / ``_background_`` (some converters add one) is class 0 itself.
* **Segmentations**: a list of polygons (``[[x0, y0, x1, y1, ...], ...]``, united), or an RLE dict whose
  ``counts`` is a string (compressed) or a list (``iscrowd`` annotations); crowd regions are painted as their
  class. Annotations with only a ``bbox`` are skipped with a warning.
* **Overlaps**: later annotations in the file are painted over earlier ones (:mod:`.raster`).
* **Images**: ``file_name`` relative to the JSON's folder, its ``images/`` folder, or ``--image-dir``
  (sub-folders kept; base name as a last resort), see :mod:`.images`.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from unetkit.data.annotations._model import (
    ERROR,
    MAX_ANNOTATION_BYTES,
    WARNING,
    AnnotatedImage,
    AnnotationSource,
    Region,
)
from unetkit.data.annotations.images import ImageFinder, image_bases, sample_key
from unetkit.data.annotations.raster import polygon_problems
from unetkit.untrusted import UntrustedFileError, load_json_limited

BACKGROUND_NAMES = ("background", "_background_", "__background__")


def is_coco(raw: Any) -> bool:
    """Whether parsed JSON looks like a COCO file (a mapping with ``images`` and ``annotations`` lists)."""
    return isinstance(raw, dict) and isinstance(raw.get("images"), list) and isinstance(raw.get("annotations"), list)


def read_coco(path: Path, *, image_dir: str = "", raw: Any = None) -> AnnotationSource:
    """Parse a COCO JSON file.

    Args:
        path: the JSON file.
        image_dir: where the images are (see :func:`unetkit.data.annotations.images.image_bases`).
        raw: the already parsed JSON (else it is read, within the size limit).

    Returns:
        The :class:`AnnotationSource` (its findings name each bad annotation, category or image).

    Raises:
        UntrustedFileError: unreadable, too large, not JSON, not COCO, or categories / images malformed.
    """
    if raw is None:
        raw = load_json_limited(path, what="COCO annotation file", max_bytes=MAX_ANNOTATION_BYTES)
    if not is_coco(raw):
        raise UntrustedFileError(f"{path}: not a COCO file (needs 'images' and 'annotations' lists)")
    used = {a.get("category_id") for a in raw["annotations"] if isinstance(a, dict)}
    classes, labels = _categories(path, raw.get("categories"), used=used)
    source = AnnotationSource(kind="coco", path=path, classes=classes, images=[])
    source.digest = hashlib.sha256(path.read_bytes() + image_dir.encode()).hexdigest()
    finder = ImageFinder(image_bases(path, image_dir))
    by_id = _images(path, raw["images"], finder, source)
    unknown: Counter[int] = Counter()
    per_image: dict[Any, list[Region]] = defaultdict(list)
    for n, ann in enumerate(raw["annotations"]):
        region = _annotation(n, ann, by_id, labels, unknown, source)
        if region is not None:
            per_image[ann["image_id"]].append(region)
    for image_id, image in by_id.items():
        image.regions = per_image.get(image_id, [])
    if unknown:
        listed = ", ".join(f"{cid} ({k} annotation(s))" for cid, k in sorted(unknown.items()))
        source.add(ERROR, "unknown_category", f"{path.name}: category id(s) not in 'categories': {listed}; "
                   "add them to 'categories' or remove those annotations", [str(c) for c in unknown])  # fmt: skip
    return source


def _categories(path: Path, raw: Any, *, used: set[Any]) -> tuple[list[str], dict[Any, int]]:
    """Classes in category id order. A category that no annotation uses and that names other categories'
    ``supercategory`` (Roboflow's exports put the project there, as id 0) is a group, not a class: dropped."""
    if not isinstance(raw, list) or not all(isinstance(c, dict) and "id" in c and "name" in c for c in raw):
        raise UntrustedFileError(f"{path}: 'categories' must be a list of {{'id', 'name'}} objects")
    parents = {str(c.get("supercategory")) for c in raw if c.get("supercategory") not in (None, "", c.get("name"))}
    raw = [c for c in raw if c["id"] in used or str(c["name"]) not in parents]
    ordered = sorted(raw, key=lambda c: (not isinstance(c["id"], int), str(c["id"]) if not isinstance(c["id"], int)
                                         else c["id"]))  # fmt: skip
    classes = ["background"]
    labels: dict[Any, int] = {}
    for cat in ordered:
        name = str(cat["name"]).strip()
        if cat["id"] in labels:
            raise UntrustedFileError(f"{path}: category id {cat['id']!r} appears twice")
        if name.lower() in BACKGROUND_NAMES:
            labels[cat["id"]] = 0
            continue
        if name in classes:
            raise UntrustedFileError(f"{path}: two categories are named {name!r}; class names must be unique")
        labels[cat["id"]] = len(classes)
        classes.append(name)
    if len(classes) > 255:
        raise UntrustedFileError(f"{path}: {len(classes) - 1} categories; at most 254 fit an 8-bit mask")
    return classes, labels


def _images(path: Path, raw: list[Any], finder: ImageFinder, source: AnnotationSource) -> dict[Any, AnnotatedImage]:
    by_id: dict[Any, AnnotatedImage] = {}
    keys: set[str] = set()
    missing = []
    for entry in raw:
        if not isinstance(entry, dict) or "id" not in entry or not isinstance(entry.get("file_name"), str):
            raise UntrustedFileError(f"{path}: every entry of 'images' needs an 'id' and a 'file_name'")
        name = entry["file_name"]
        h, w = entry.get("height"), entry.get("width")
        size_ok = isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0
        key = sample_key(name)
        if key in keys:
            key = f"{key}_id{entry['id']}"
        keys.add(key)
        found = finder.find(name)
        if found is None:
            missing.append(name)
        image = AnnotatedImage(key=key, name=name, image=found, height=h if size_ok else None,
                               width=w if size_ok else None)  # fmt: skip
        by_id[entry["id"]] = image
        source.images.append(image)
    if missing:
        bases = ", ".join(str(b) for b in finder.bases) or "no existing folder"
        source.add(WARNING, "missing_image", f"{len(missing)} image(s) named in {path.name} were not found "
                   f"(looked in {bases}; pass --image-dir): {_few(missing)}; they are skipped", missing)  # fmt: skip
    return by_id


def _annotation(
    n: int, ann: Any, by_id: dict[Any, AnnotatedImage], labels: dict[Any, int], unknown: Counter, source: AnnotationSource
) -> Region | None:
    """One COCO annotation as a region, or ``None`` (with a finding) when it cannot be used."""
    item = f"{source.path.name}: annotation {ann.get('id', f'#{n}') if isinstance(ann, dict) else f'#{n}'}"
    if not isinstance(ann, dict) or "image_id" not in ann or "category_id" not in ann:
        source.add(ERROR, "bad_annotation", f"{item}: needs 'image_id' and 'category_id'", [item])
        return None
    image = by_id.get(ann["image_id"])
    if image is None:
        source.add(ERROR, "unknown_image", f"{item}: image_id {ann['image_id']!r} is not in 'images'", [item])
        return None
    if ann["category_id"] not in labels:
        unknown[ann["category_id"]] += 1
        return None
    seg = ann.get("segmentation")
    label = labels[ann["category_id"]]
    item = f"{item} (image {image.name})"
    if isinstance(seg, dict):
        return Region(label=label, item=item, rle=seg)
    if not seg:
        source.add(WARNING, "no_segmentation", f"{item}: no segmentation (box only); skipped", [item])
        return None
    if not isinstance(seg, list) or not all(isinstance(p, list) and all(isinstance(v, (int, float)) for v in p)
                                            for p in seg):  # fmt: skip
        source.add(ERROR, "bad_annotation", f"{item}: 'segmentation' must be a list of [x, y, ...] polygons "
                   "or an RLE object", [item])  # fmt: skip
        return None
    rings = [p for p in seg if len(p) >= 6 and len(p) % 2 == 0]
    if len(rings) < len(seg):
        source.add(WARNING, "bad_polygon", f"{item}: {len(seg) - len(rings)} polygon(s) with fewer than 3 points "
                   "or an odd number of coordinates; skipped", [item])  # fmt: skip
    check_rings(rings, image=image, item=item, source=source)
    return Region(label=label, item=item, polygons=rings) if rings else None


def check_rings(rings: list[list[float]], *, image: AnnotatedImage, item: str, source: AnnotationSource) -> None:
    """Add findings for self-intersecting rings and rings outside ``image`` (needs the image's size)."""
    if image.height is None or image.width is None:
        return
    for ring in rings:
        invalid, outside = polygon_problems(ring, height=image.height, width=image.width)
        if invalid:
            source.add(WARNING, "invalid_polygon", f"{item}: invalid polygon ({invalid}); it is filled as drawn "
                       "(even-odd), which may not be what was meant", [item])  # fmt: skip
        if outside == "entirely":
            source.add(WARNING, "outside_image", f"{item}: polygon lies entirely outside the "
                       f"{image.width}x{image.height} image; it paints nothing", [item])  # fmt: skip
        elif outside == "partly":
            source.add(WARNING, "outside_image", f"{item}: polygon reaches outside the {image.width}x{image.height} "
                       "image; it is clipped", [item])  # fmt: skip


def _few(names: list[str], n: int = 5) -> str:
    return ", ".join(names[:n]) + (f" (and {len(names) - n} more)" if len(names) > n else "")
