"""Read an explicit sample list: a CSV (``image,mask[,roi][,group][,key]``) or a JSON list of objects.

Paths are relative to the list file's folder (absolute paths are kept). Several channel files for one image:
``a_t1.nii.gz;a_t2.nii.gz`` in a CSV cell, or a JSON list.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

from unetkit.data._raw import split_name


@dataclass
class ListRow:
    key: str
    image: Path | list[Path]
    mask: Path | None
    roi: Path | None
    group: str
    folder: str


def read_sample_list(path: Path) -> tuple[list[ListRow], list[Path]]:
    """Parse a CSV/JSON sample list.

    Returns:
        ``(rows, missing)``: rows whose files all exist, and the files named in the list that do not exist.

    Raises:
        ValueError: unknown list format, no ``image`` column/key, empty list, duplicate keys.
    """
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="") as f:
            records = list(csv.DictReader(f))
        if records and "image" not in records[0]:
            raise ValueError(f"{path}: CSV needs an 'image' column (found: {', '.join(records[0])})")
    elif suffix == ".json":
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from err
        found = raw.get("samples") if isinstance(raw, dict) else raw
        if not isinstance(found, list) or not all(isinstance(r, dict) and "image" in r for r in found):
            raise ValueError(f"{path}: expected a JSON list of objects with an 'image' key")
        records = found
    else:
        raise ValueError(f"{path}: a sample list must be .csv or .json, not {suffix or 'no extension'}")
    if not records:
        raise ValueError(f"{path} lists no samples")
    return _rows(records, path.parent)


def _rows(records: list[dict], base: Path) -> tuple[list[ListRow], list[Path]]:
    rows: list[ListRow] = []
    missing: list[Path] = []
    seen: dict[str, Path] = {}
    for rec in records:
        images = _paths(rec.get("image"), base)
        mask = _paths(rec.get("mask"), base)
        roi = _paths(rec.get("roi"), base)
        absent = [p for p in images + mask + roi if not p.exists()]
        if absent or not images:
            missing += absent
            continue
        rel = Path(os.path.relpath(images[0], base))
        key = str(rec.get("key") or (rel.parent / split_name(rel)[0]).as_posix())
        if key in seen:
            raise ValueError(
                f"two list rows have the key {key!r} ({seen[key]} and {images[0]}); add a 'key' column"
            )
        seen[key] = images[0]
        folder = rel.parent.as_posix()
        rows.append(ListRow(key=key, image=images if len(images) > 1 else images[0], mask=mask[0] if mask else None,
                            roi=roi[0] if roi else None, group=str(rec.get("group") or ""), folder=folder))  # fmt: skip
    return rows, missing


def _paths(value: object, base: Path) -> list[Path]:
    if value is None or value == "":
        return []
    items = value if isinstance(value, list) else str(value).split(";")
    out = []
    for item in items:
        p = Path(str(item).strip()).expanduser()
        out.append(p if p.is_absolute() else base / p)
    return out
