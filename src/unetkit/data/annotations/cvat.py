"""CVAT exports as labelled datasets: "Segmentation mask 1.1" and "CVAT for images 1.1" (XML).

**Segmentation mask 1.1** (a folder, or the zip CVAT downloads): ``labelmap.txt`` (``name:r,g,b:parts:actions``
per line) and ``SegmentationClass/<image stem>.png`` colour masks; images in ``JPEGImages/`` when the export
includes them, else under ``--image-dir``. Classes follow ``labelmap.txt`` (``background`` first; added as
black when the file lacks it). A mask colour that ``labelmap.txt`` lacks is an error naming the file and colour.

**CVAT for images 1.1** (``annotations.xml``): ``<image name width height>`` elements holding ``<polygon
points="x,y;x,y...">`` and ``<mask rle="..." left top width height>`` shapes (CVAT's mask RLE: alternating
runs, starting with background, row by row inside the ``width x height`` box at ``left, top``). Boxes, lines,
points, ellipses and skeletons are skipped with a warning. Shapes are painted by ``z_order``, then in file
order (later on top), as CVAT draws them. Classes: ``background``, then the labels in the order of the
export's ``<meta>`` (else first use).
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from unetkit.data._raw import is_data_file, read_mask_array, split_name
from unetkit.data.annotations._model import (
    ERROR,
    MAX_ANNOTATION_BYTES,
    WARNING,
    AnnotatedImage,
    AnnotationSource,
    Region,
)
from unetkit.data.annotations.coco import check_rings
from unetkit.data.annotations.images import ImageFinder, image_bases, sample_key
from unetkit.untrusted import UntrustedFileError, read_bytes_limited

_SKIPPED_SHAPES = ("box", "polyline", "points", "ellipse", "cuboid", "skeleton", "tag")


def read_labelmap(path: Path) -> dict[str, list[int]]:
    """``labelmap.txt`` as ``{name: [r, g, b]}`` in file order, ``background`` first (black when absent).

    Raises:
        UntrustedFileError: a line that is not ``name:r,g,b...``, or a colour used twice.
    """
    text = read_bytes_limited(path, what="CVAT labelmap", max_bytes=MAX_ANNOTATION_BYTES).decode("utf-8", "replace")
    table: dict[str, list[int]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, rest = line.partition(":")
        try:
            rgb = [int(v) for v in rest.split(":")[0].split(",")]
        except ValueError:
            rgb = []
        if not name.strip() or len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
            raise UntrustedFileError(f"{path}: line {number} is not 'name:r,g,b::' ({line.strip()[:60]!r})")
        if rgb in table.values():
            raise UntrustedFileError(f"{path}: line {number}: colour {rgb} is used by two labels")
        table[name.strip()] = rgb
    black = next((n for n, c in table.items() if c == [0, 0, 0]), None)
    others = {n: c for n, c in table.items() if n != black}
    return {"background": [0, 0, 0], **others}


def read_cvat_masks(root: Path, *, image_dir: str = "") -> AnnotationSource:
    """Parse a CVAT "Segmentation mask 1.1" export folder.

    Raises:
        UntrustedFileError: no ``labelmap.txt`` / ``SegmentationClass`` folder, or a malformed labelmap.
    """
    table = read_labelmap(root / "labelmap.txt")
    mask_dir = root / "SegmentationClass"
    if not mask_dir.is_dir():
        raise UntrustedFileError(f"{root}: a CVAT segmentation-mask export needs a SegmentationClass/ folder")
    masks = sorted(p for p in mask_dir.rglob("*") if is_data_file(p))
    digest = hashlib.sha256((root / "labelmap.txt").read_bytes() + image_dir.encode())
    for p in masks:
        digest.update(f"{p.relative_to(mask_dir)}:{p.stat().st_size}:{p.stat().st_mtime_ns};".encode())
    source = AnnotationSource(kind="cvat_masks", path=root, classes=list(table), images=[], digest=digest.hexdigest())
    images = _images_by_key(image_bases(root, image_dir))
    missing = []
    for mask in masks:
        rel = mask.relative_to(mask_dir)
        key = (rel.parent / split_name(rel)[0]).as_posix()
        image = images.get(key) or images.get(split_name(rel)[0])
        if image is None:
            missing.append(rel.as_posix())
        source.images.append(AnnotatedImage(key=key, name=rel.as_posix(), image=image, painter=_colour_painter(mask, table)))
    if missing:
        source.add(WARNING, "missing_image", f"{len(missing)} mask(s) of {root.name} have no image (looked in "
                   f"JPEGImages/ or --image-dir): {', '.join(missing[:5])}; they are skipped", missing)  # fmt: skip
    return source


def _images_by_key(bases: list[Path]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for base in (b for b in bases if b.is_dir()):
        for p in sorted(base.rglob("*")):
            rel = p.relative_to(base)
            if is_data_file(p) and "SegmentationClass" not in rel.parts and "SegmentationObject" not in rel.parts:
                found.setdefault((rel.parent / split_name(rel)[0]).as_posix(), p)
    return found


def _colour_painter(mask: Path, table: dict[str, list[int]]) -> Callable[[], np.ndarray]:
    def paint() -> np.ndarray:
        from unetkit.data.masks import encode_colours

        raw = read_mask_array(mask, resolve_palette=True)
        if raw.ndim == 2:
            raw = np.repeat(raw[..., None], 3, axis=-1)
        # A colour missing from labelmap.txt raises MaskEncodingError naming the file and each colour.
        return encode_colours(raw, table, source=str(mask)).astype(np.uint8)

    return paint


def read_cvat_xml(path: Path, *, image_dir: str = "") -> AnnotationSource:
    """Parse a "CVAT for images 1.1" ``annotations.xml``.

    Raises:
        UntrustedFileError: unreadable, too large, not XML, with entity declarations, or not a CVAT file.
    """
    data = read_bytes_limited(path, what="CVAT XML", max_bytes=MAX_ANNOTATION_BYTES)
    if b"<!ENTITY" in data or b"<!DOCTYPE" in data:
        raise UntrustedFileError(f"{path}: XML with a DOCTYPE/ENTITY declaration is refused (CVAT writes none)")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as err:
        raise UntrustedFileError(f"{path}: not valid XML ({err})") from None
    if root.tag != "annotations":
        raise UntrustedFileError(f"{path}: not a CVAT XML file (root element <{root.tag}>, expected <annotations>)")
    if root.find("track") is not None and root.find("image") is None:
        raise UntrustedFileError(f"{path}: a 'CVAT for video' export (tracks); export the task as 'CVAT for images 1.1'")
    names = [n.text.strip() for n in root.iterfind("meta//labels/label/name") if n.text]
    names += [s.get("label", "") for im in root.iter("image") for s in im if s.get("label")]
    classes = ["background", *dict.fromkeys(n for n in names if n and n.lower() != "background")]
    source = AnnotationSource(kind="cvat_xml", path=path, classes=classes, images=[],
                              digest=hashlib.sha256(data + image_dir.encode()).hexdigest())  # fmt: skip
    finder = ImageFinder(image_bases(path, image_dir))
    skipped: Counter[str] = Counter()
    missing: list[str] = []
    keys: set[str] = set()
    for element in root.iter("image"):
        image = _xml_image(element, finder, keys, source)
        if image is None:
            continue
        if image.image is None:
            missing.append(image.name)
        shapes = sorted(enumerate(element), key=lambda e: (_int(e[1].get("z_order"), 0), e[0]))
        for _, shape in shapes:
            _xml_shape(shape, image, classes, skipped, source)
        source.images.append(image)
    if missing:
        source.add(WARNING, "missing_image", f"{len(missing)} image(s) of {path.name} were not found (pass "
                   f"--image-dir): {', '.join(missing[:5])}; they are skipped", missing)  # fmt: skip
    if skipped:
        kinds = ", ".join(f"{k} ({n})" for k, n in sorted(skipped.items()))
        source.add(WARNING, "unsupported_shape", f"{path.name}: shapes without an area are ignored: {kinds}")
    return source


def _xml_image(element: ET.Element, finder: ImageFinder, keys: set[str], source: AnnotationSource) -> AnnotatedImage | None:
    name = element.get("name") or ""
    h, w = _int(element.get("height"), 0), _int(element.get("width"), 0)
    if not name or h <= 0 or w <= 0:
        source.add(ERROR, "bad_annotation", f"{source.path.name}: <image id={element.get('id')!r}> needs a name, "
                   "width and height", [name])  # fmt: skip
        return None
    key = sample_key(name)
    if key in keys:
        key = f"{key}_id{element.get('id')}"
    keys.add(key)
    return AnnotatedImage(key=key, name=name, image=finder.find(name), height=h, width=w)


def _xml_shape(shape: ET.Element, image: AnnotatedImage, classes: list[str], skipped: Counter, source: AnnotationSource) -> None:
    if shape.tag in _SKIPPED_SHAPES:
        skipped[shape.tag] += 1
        return
    if shape.tag not in ("polygon", "mask"):
        return
    label = shape.get("label", "")
    item = f"{source.path.name}: {image.name} {shape.tag} ({label})"
    index = 0 if label.lower() == "background" else classes.index(label)
    assert image.height is not None and image.width is not None
    try:
        if shape.tag == "polygon":
            ring = [float(v) for pt in (shape.get("points") or "").split(";") for v in pt.split(",")]
            if len(ring) < 6 or len(ring) % 2:
                raise ValueError("a polygon needs at least 3 'x,y' points")
            check_rings([ring], image=image, item=item, source=source)
            image.regions.append(Region(label=index, item=item, polygons=[ring]))
        else:
            image.regions.append(Region(label=index, item=item, bitmap=cvat_mask(shape, image.height, image.width)))
    except ValueError as err:
        source.add(ERROR, "bad_annotation", f"{item}: {err}", [item])


def cvat_mask(shape: ET.Element, height: int, width: int) -> np.ndarray:
    """The full-image boolean mask of a CVAT XML ``<mask>``.

    Raises:
        ValueError: runs that are not integers, do not fill the box, or a box outside the image.
    """
    left, top = _int(shape.get("left"), -1), _int(shape.get("top"), -1)
    w, h = _int(shape.get("width"), 0), _int(shape.get("height"), 0)
    try:
        runs = [int(float(v)) for v in (shape.get("rle") or "").split(",") if v.strip()]
    except ValueError:
        raise ValueError("mask 'rle' must be comma-separated run lengths") from None
    if w <= 0 or h <= 0 or left < 0 or top < 0 or left + w > width or top + h > height:
        raise ValueError(f"mask box left={left} top={top} width={w} height={h} is outside the {width}x{height} image")
    if any(r < 0 for r in runs) or sum(runs) != w * h:
        raise ValueError(f"mask runs add up to {sum(runs)}, not the box's {w}x{h} = {w * h} pixels")
    values = np.zeros(len(runs), dtype=bool)
    values[1::2] = True
    box = np.repeat(values, runs).reshape(h, w)
    out = np.zeros((height, width), dtype=bool)
    out[top : top + h, left : left + w] = box
    return out


def _int(text: str | None, default: int) -> int:
    try:
        return int(round(float(text))) if text is not None else default
    except ValueError:
        return default
