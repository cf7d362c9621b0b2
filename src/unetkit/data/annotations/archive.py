"""Zip exports (CVAT and Label Studio download zips): unpacked once, safely, into the label cache.

Member names are checked (no absolute paths, no ``..``), and the total unpacked size is bounded, so a
hostile archive can neither write outside its folder nor fill the disk.
"""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from pathlib import Path, PurePosixPath

from unetkit.data.annotations._model import MiB
from unetkit.untrusted import UntrustedFileError, read_bytes_limited

MAX_ARCHIVE_BYTES = 4096 * MiB
MAX_UNPACKED_BYTES = 16384 * MiB


def unpack_export(path: Path, *, cache_root: Path | None = None) -> Path:
    """Unpack ``path`` into ``<cache>/zip-<hash>/`` (once) and return the export inside it: the folder holding
    ``labelmap.txt`` / ``annotations.xml`` / ``annotations/``, or the single JSON file at its top.

    Raises:
        UntrustedFileError: not a zip, unsafe member names, too large unpacked, or no export inside.
    """
    from unetkit.data.annotations.cache import default_cache_root

    if not zipfile.is_zipfile(path):
        raise UntrustedFileError(f"{path}: not a zip archive")
    digest = hashlib.sha256(read_bytes_limited(path, what="zip export", max_bytes=MAX_ARCHIVE_BYTES)).hexdigest()
    target = (cache_root or default_cache_root()) / f"zip-{digest[:20]}"
    if not (target / ".complete").is_file():
        _extract(path, target)
    return _export_in(target, path)


def _extract(path: Path, target: Path) -> None:
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
        total = sum(m.file_size for m in members)
        if total > MAX_UNPACKED_BYTES:
            raise UntrustedFileError(f"{path}: unpacks to {total / MiB:.0f} MiB, over the {MAX_UNPACKED_BYTES / MiB:.0f} MiB limit")
        for m in members:
            name = PurePosixPath(m.filename)
            if name.is_absolute() or ".." in name.parts or "\\" in m.filename:
                raise UntrustedFileError(f"{path}: unsafe member name {m.filename!r}")
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        archive.extractall(partial)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    (target / ".complete").write_text("ok")


def _export_in(folder: Path, path: Path) -> Path:
    for marker in ("labelmap.txt", "annotations.xml"):
        hits = sorted(folder.rglob(marker), key=lambda p: len(p.parts))
        if hits:
            return hits[0].parent if marker == "labelmap.txt" else hits[0]
    jsons = sorted(folder.rglob("*.json"), key=lambda p: len(p.parts))
    if jsons:
        return jsons[0]
    raise UntrustedFileError(f"{path}: the zip holds no labelmap.txt, annotations.xml or JSON annotation file")
