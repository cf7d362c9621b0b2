"""Find the image files an export names: relative to the export, under ``--image-dir``, or by base name.

Exports name images in their own ways: COCO ``file_name`` (``frame_000001.jpg`` or ``sub/dir/x.png``), CVAT
``name``, Label Studio URLs (``/data/upload/1/3f2a9c1e-x.png`` with an 8-hex-digit prefix the upload added,
``/data/local-files/?d=folder/x.png``, ``s3://bucket/x.png``). Each is tried as a relative path under every
base folder, then by its base name anywhere under the bases (and, for Label Studio uploads, without the prefix).
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, unquote, urlparse

from unetkit.data._raw import is_data_file, split_name

# Label Studio prefixes every uploaded file name with 8 hex digits and a dash.
_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-(?P<name>.+)$")


def export_path(name: str) -> str:
    """The file path inside an export's image name: URL query ``?d=`` (Label Studio local files), the path of a
    URL (``/data/upload/1/x.png``, ``s3://b/x.png``), or the name itself; percent-escapes decoded."""
    parsed = urlparse(name)
    if parsed.query and "d" in parse_qs(parsed.query):
        return unquote(parse_qs(parsed.query)["d"][0])
    if parsed.scheme and len(parsed.scheme) > 1:  # not a Windows drive letter
        return unquote(parsed.path)
    return unquote(name)


def sample_key(name: str) -> str:
    """A sample key from an image name: its relative path without extension (``a/b/img_01``)."""
    path = PurePosixPath(export_path(name).replace("\\", "/"))
    parts = [p for p in path.parts if p not in ("/", "..", ".")]
    if not parts:
        return "image"
    return str(PurePosixPath(*parts[:-1], split_name(Path(parts[-1]))[0]))


class ImageFinder:
    """Looks image names up under a list of base folders (first match wins).

    Args:
        bases: folders to look in, in order (missing ones are skipped).
    """

    def __init__(self, bases: list[Path]) -> None:
        self.bases = [b for b in dict.fromkeys(bases) if b.is_dir()]
        self._by_name: dict[str, list[Path]] | None = None

    def find(self, name: str) -> Path | None:
        """The file for ``name``, or ``None`` when no candidate exists."""
        rel = export_path(name).replace("\\", "/")
        path = Path(rel)
        if path.is_absolute() and is_data_file(path):
            return path
        parts = [p for p in PurePosixPath(rel).parts if p not in ("/", "..", ".")]
        for base in self.bases:
            for start in range(len(parts)):  # "sub/x.png", then "x.png": exports add their own folders
                candidate = base.joinpath(*parts[start:])
                if candidate.is_file():
                    return candidate
        if not parts:
            return None
        base_name = parts[-1]
        match = _UPLOAD_PREFIX.match(base_name)
        for candidate_name in (base_name, match["name"] if match else None):
            hits = self._index().get(candidate_name or "", [])
            if len(hits) == 1:
                return hits[0]
        return None

    def _index(self) -> dict[str, list[Path]]:
        if self._by_name is None:
            self._by_name = {}
            for base in self.bases:
                for p in base.rglob("*"):
                    if is_data_file(p) and not any(s.startswith(".") for s in p.relative_to(base).parts):
                        self._by_name.setdefault(p.name, []).append(p)
        return self._by_name


def image_bases(export: Path, image_dir: str) -> list[Path]:
    """Where to look for images: ``image_dir`` (relative to the export's folder, or absolute) alone when given,
    else the export's folder, its ``images/`` (CVAT's COCO zip: ``annotations/`` next to ``images/``), its
    ``JPEGImages/`` (CVAT/VOC) and its parent's ``images/``. A relative ``image_dir`` that is a folder from the
    current directory is taken as it is."""
    folder = export if export.is_dir() else export.parent
    if image_dir:
        given = Path(image_dir).expanduser()
        return [given if given.is_absolute() or given.is_dir() else folder / given]
    return [folder, folder / "images", folder / "JPEGImages", folder.parent / "images"]
