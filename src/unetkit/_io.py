"""Atomic file writes shared by every stage: write to a temporary name beside the target, then rename.

A reader (or a killed process) therefore sees either the old file or the complete new one, never half.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _suffix(path: Path) -> str:
    # Keep the double suffix of .nii.gz: some writers (nibabel) pick compression from the name.
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only if the block succeeds.

    The temporary file is in the destination folder (so the rename is atomic on one file system) and
    ends with the destination's suffix. On an exception it is deleted and the destination is untouched.

    Raises:
        FileNotFoundError: the destination folder does not exist.
    """
    dest = Path(path)
    if not dest.parent.is_dir():
        raise FileNotFoundError(f"{dest}: folder {dest.parent} does not exist")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=f".tmp{_suffix(dest)}", dir=dest.parent)
    except OSError as err:  # a read-only or full file system, no permission
        raise _cannot_write(dest, err) from err
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, dest)
    except OSError as err:
        raise _cannot_write(dest, err) from err
    finally:
        # After a successful replace the temporary name is gone; after a failure it must go.
        tmp.unlink(missing_ok=True)


def _cannot_write(dest: Path, err: OSError) -> OSError:
    """``err`` (same errno, so the same OSError subclass) with a message naming the destination."""
    if err.errno is None:
        return OSError(f"cannot write {dest}: {err}")
    return OSError(err.errno, f"cannot write {dest}: {err.strerror or err}")


def stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Temporary files :func:`atomic_path` left beside ``path`` when its process was killed mid-write.

    They never carry the final name, so a reader cannot mistake one for ``path``; a re-run may delete them.
    """
    dest = Path(path)
    if not dest.parent.is_dir():
        return []
    return sorted(dest.parent.glob(f".{glob_escape(dest.name)}.*.tmp{glob_escape(_suffix(dest))}"))


def glob_escape(text: str) -> str:
    """``text`` with glob metacharacters made literal (``[``, ``*``, ``?``)."""
    return "".join(f"[{c}]" if c in "[]*?" else c for c in text)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as indented JSON (with a final newline) to ``path`` atomically."""
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


__all__ = ["atomic_path", "glob_escape", "stale_temporaries", "write_json_atomic", "write_text_atomic"]
