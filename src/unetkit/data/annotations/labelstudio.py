"""Label Studio JSON export (a list of tasks) as a labelled dataset.

* Each task's image is ``data["image"]`` (else the first string in ``data``): an upload URL
  (``/data/upload/3/8f2c1a0b-name.png``), a local-files URL (``/data/local-files/?d=dir/name.png``) or a
  cloud URL, looked up under ``--image-dir`` by its path, then by its base name with and without the 8-digit
  prefix Label Studio adds to uploads (:mod:`.images`).
* The annotation used per task: the one marked ``ground_truth``, else the most recently updated one that was
  not cancelled (a warning names tasks with several); tasks with none are skipped (unlabelled).
* ``brushlabels`` results: brush RLE (:mod:`.brush_rle`) of an ``original_height x original_width`` image;
  ``polygonlabels``: points in percent of ``original_width`` / ``original_height``. Other result types
  (rectangles, key points, choices) are skipped with a warning. Results are painted in their order (later on top).
* Classes: ``background``, then the label names in sorted order (an export does not carry the project's own
  label order).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from unetkit.data.annotations._model import (
    MAX_ANNOTATION_BYTES,
    WARNING,
    AnnotatedImage,
    AnnotationSource,
    Region,
)
from unetkit.data.annotations.brush_rle import rle_to_mask
from unetkit.data.annotations.coco import check_rings
from unetkit.data.annotations.images import ImageFinder, image_bases, sample_key
from unetkit.untrusted import UntrustedFileError, load_json_limited, read_bytes_limited

_KINDS = {"brushlabels": "brushlabels", "polygonlabels": "polygonlabels"}


def is_labelstudio(raw: Any) -> bool:
    """Whether parsed JSON looks like a Label Studio export: a list of tasks with ``data`` and annotations."""
    return (isinstance(raw, list) and bool(raw) and all(isinstance(t, dict) and isinstance(t.get("data"), dict)
            for t in raw) and any("annotations" in t or "completions" in t for t in raw))  # fmt: skip


def is_labelstudio_min(raw: Any) -> bool:
    """Whether parsed JSON is Label Studio's JSON-MIN export (tasks flattened, results under their tag names)."""
    return isinstance(raw, list) and bool(raw) and all(isinstance(t, dict) for t in raw) and any(
        isinstance(v, list) and v and isinstance(v[0], dict) and any(k in v[0] for k in _KINDS)
        for t in raw for v in t.values())  # fmt: skip


def read_labelstudio(path: Path, *, image_dir: str = "", raw: Any = None) -> AnnotationSource:
    """Parse a Label Studio JSON export.

    Raises:
        UntrustedFileError: unreadable, too large, or not a Label Studio export.
    """
    data = read_bytes_limited(path, what="Label Studio export", max_bytes=MAX_ANNOTATION_BYTES)
    if raw is None:
        raw = load_json_limited(path, what="Label Studio export", max_bytes=MAX_ANNOTATION_BYTES)
    if not is_labelstudio(raw):
        raise UntrustedFileError(f"{path}: not a Label Studio export (expected a list of tasks with 'data')")
    finder = ImageFinder(image_bases(path, image_dir))
    picked = [(task, _pick(task)) for task in raw]
    names = sorted({n for _, ann in picked if ann for r in _results(ann) for n in _labels(r)})
    source = AnnotationSource(kind="labelstudio", path=path, classes=["background", *names], images=[])
    source.digest = hashlib.sha256(data + image_dir.encode()).hexdigest()
    labels = {name: i for i, name in enumerate(source.classes)}
    skipped: Counter[str] = Counter()
    keys: set[str] = set()
    missing, several = [], []
    for n, (task, ann) in enumerate(picked):
        if ann is None:
            continue
        if len([a for a in task.get("annotations") or [] if not a.get("was_cancelled")]) > 1:
            several.append(str(task.get("id", n)))
        image = _task_image(task, n, finder, keys)
        if image.image is None:
            missing.append(image.name)
        _add_results(image, _results(ann), labels, skipped, source)
        source.images.append(image)
    _report(source, path, finder, missing, several, skipped)
    return source


def _pick(task: dict[str, Any]) -> dict[str, Any] | None:
    anns = [a for a in (task.get("annotations") or task.get("completions") or []) if isinstance(a, dict)
            and not a.get("was_cancelled")]  # fmt: skip
    if not anns:
        return None
    truth = [a for a in anns if a.get("ground_truth")]
    return (truth or sorted(anns, key=lambda a: str(a.get("updated_at") or a.get("created_at") or "")))[-1]


def _results(ann: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in ann.get("result") or [] if isinstance(r, dict) and isinstance(r.get("value"), dict)]


def _labels(result: dict[str, Any]) -> list[str]:
    kind = result.get("type")
    return [str(v) for v in result["value"].get(kind, [])] if kind in _KINDS else []


def _task_image(task: dict[str, Any], n: int, finder: ImageFinder, keys: set[str]) -> AnnotatedImage:
    data = task["data"]
    name = data.get("image") if isinstance(data.get("image"), str) else next(
        (v for v in data.values() if isinstance(v, str)), f"task_{task.get('id', n)}")  # fmt: skip
    key = sample_key(name)
    if key in keys:
        key = f"{key}_task{task.get('id', n)}"
    keys.add(key)
    return AnnotatedImage(key=key, name=name, image=finder.find(name))


def _add_results(
    image: AnnotatedImage, results: list[dict[str, Any]], labels: dict[str, int], skipped: Counter, source: AnnotationSource
) -> None:
    for k, result in enumerate(results):
        kind = result.get("type")
        item = f"{source.path.name}: {image.name} result {result.get('id', k)}"
        if kind not in _KINDS:
            skipped[str(kind)] += 1
            continue
        h, w = result.get("original_height"), result.get("original_width")
        if not (isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0):
            h, w = _file_size(image)  # older exports: no original size; the image file has it
        if h is None or w is None:
            source.add(WARNING, "bad_annotation", f"{item}: no original_width/original_height and no image "
                       "file to read them from; skipped", [item])  # fmt: skip
            continue
        image.height, image.width = h, w
        if result.get("image_rotation"):
            source.add(WARNING, "rotated", f"{item}: drawn on a rotated image ({result['image_rotation']} deg); "
                       "unetkit reads it as unrotated", [item])  # fmt: skip
        for name in _labels(result)[:1]:
            region = _region(result, kind, labels[name], item, h, w, source)
            if region is not None:
                check_rings(region.polygons or [], image=image, item=item, source=source)
                image.regions.append(region)


def _file_size(image: AnnotatedImage) -> tuple[int | None, int | None]:
    from unetkit.data.annotations.cache import image_size

    try:
        return image_size(image) if image.image is not None else (None, None)
    except (ValueError, OSError):
        return None, None


def _region(
    result: dict[str, Any], kind: str, label: int, item: str, h: int, w: int, source: AnnotationSource
) -> Region | None:
    value = result["value"]
    if kind == "brushlabels":
        try:
            bitmap = rle_to_mask(value.get("rle") or [], height=h, width=w)
        except ValueError as err:
            source.add(WARNING, "bad_annotation", f"{item}: {err}; skipped", [item])
            return None
        return Region(label=label, item=item, bitmap=bitmap)
    points = value.get("points")
    try:
        pts = np.asarray(points, dtype=float).reshape(-1, 2) * [w / 100.0, h / 100.0]
    except (TypeError, ValueError):
        pts = np.zeros((0, 2))
    if len(pts) < 3:
        source.add(WARNING, "bad_polygon", f"{item}: polygon with fewer than 3 points; skipped", [item])
        return None
    return Region(label=label, item=item, polygons=[pts.ravel().tolist()])


def _report(source: AnnotationSource, path: Path, finder: ImageFinder, missing: list[str], several: list[str],
            skipped: Counter) -> None:  # fmt: skip
    if missing:
        bases = ", ".join(str(b) for b in finder.bases) or "no existing folder"
        source.add(WARNING, "missing_image", f"{len(missing)} image(s) of {path.name} were not found (looked in "
                   f"{bases}; pass --image-dir): {', '.join(missing[:5])}; they are skipped", missing)  # fmt: skip
    if several:
        source.add(WARNING, "several_annotations", f"{len(several)} task(s) have several annotations; the ground "
                   f"truth or the latest one is used (tasks {', '.join(several[:5])})", several)  # fmt: skip
    if skipped:
        kinds = ", ".join(f"{k} ({n})" for k, n in sorted(skipped.items()))
        source.add(WARNING, "unsupported_result", f"{path.name}: result types without a mask skipped: {kinds}")
