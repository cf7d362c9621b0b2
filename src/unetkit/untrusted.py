"""Reading files that may come from someone else: bounded size, bounded nesting, one-line errors.

Every loader of a file a user may have been handed (a plan, an ONNX graph, an annotation export, a vector layer)
reads it through these functions, so that a huge, truncated or hostile file is refused before it costs more than
its size limit in memory, and the message names the file and the problem.

Example:
    >>> data = load_json_limited("labels/coco.json", what="COCO annotation file", max_bytes=512 * 2**20)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

MiB = 2**20
# Nesting deeper than this is refused: no annotation format or plan nests more than ~10 levels.
MAX_DEPTH = 64


class UntrustedFileError(ValueError):
    """A file that cannot be used as given; the message is one line: ``<file>: <problem>``."""


def read_bytes_limited(path: str | os.PathLike[str], *, what: str, max_bytes: int) -> bytes:
    """The bytes of ``path``, refusing a missing file or one larger than ``max_bytes``.

    Args:
        path: the file.
        what: what the file should be, for the message (e.g. ``"COCO annotation file"``).
        max_bytes: the largest size accepted.

    Raises:
        UntrustedFileError: no such file, not a regular file, too large, or unreadable.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise UntrustedFileError(f"{path}: no such {what}") from None
    except OSError as err:
        raise UntrustedFileError(f"{path}: cannot read {what} ({err.strerror or err})") from None
    if not path.is_file():
        raise UntrustedFileError(f"{path}: not a file (expected a {what})")
    if size > max_bytes:
        raise UntrustedFileError(f"{path}: {what} is {size / MiB:.1f} MiB, over the {max_bytes / MiB:.0f} MiB limit")
    try:
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as err:
        raise UntrustedFileError(f"{path}: cannot read {what} ({err.strerror or err})") from None
    if len(data) > max_bytes:  # grew while being read
        raise UntrustedFileError(f"{path}: {what} is over the {max_bytes / MiB:.0f} MiB limit")
    return data


def load_json_limited(
    path: str | os.PathLike[str], *, what: str, max_bytes: int, max_depth: int = MAX_DEPTH
) -> Any:
    """Parse ``path`` as JSON (UTF-8) within ``max_bytes`` and ``max_depth`` levels of nesting.

    Raises:
        UntrustedFileError: as :func:`read_bytes_limited`, or not UTF-8 / not JSON / nested too deeply.
    """
    data = read_bytes_limited(path, what=what, max_bytes=max_bytes)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise UntrustedFileError(f"{path}: {what} is not UTF-8 text (byte {err.start})") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise UntrustedFileError(f"{path}: {what} is not valid JSON ({err.msg} at line {err.lineno})") from None
    except RecursionError:  # the C parser's own bound on nesting (about 1000 levels)
        raise UntrustedFileError(f"{path}: {what} nests too deeply (over {max_depth} levels)") from None
    depth = nesting_depth(value)
    if depth > max_depth:
        raise UntrustedFileError(f"{path}: {what} nests {depth} levels deep, over the limit of {max_depth}")
    return value


def nesting_depth(value: Any) -> int:
    """How deeply lists and dicts nest in a parsed JSON/YAML ``value`` (a scalar is 0); iterative, no recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth + 1)
            stack.extend((child, depth + 1) for child in item if isinstance(child, (list, dict)))
    return deepest
