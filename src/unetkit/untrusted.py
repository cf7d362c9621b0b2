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
# YAML anchors/aliases may add at most this many nodes once expanded (a hand-written plan sharing a tile size
# adds a handful; a "billion laughs" document adds 10**9 from a few hundred bytes and is refused).
MAX_ALIAS_NODES = 10_000


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
            data = handle.read(size + 1)  # not max_bytes + 1: read(n) reserves n bytes before reading
    except OSError as err:
        raise UntrustedFileError(f"{path}: cannot read {what} ({err.strerror or err})") from None
    if len(data) > size and len(data) > max_bytes:  # grew while being read
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
    except ValueError as err:  # an integer of more than 4300 digits (int()'s own limit)
        raise UntrustedFileError(f"{path}: {what} is not usable JSON ({_first_line(err)})") from None
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


def load_yaml_limited(
    path: str | os.PathLike[str],
    *,
    what: str,
    max_bytes: int,
    max_depth: int = MAX_DEPTH,
    max_alias_nodes: int = MAX_ALIAS_NODES,
) -> Any:
    """Parse ``path`` as YAML (UTF-8, safe tags only) within ``max_bytes``, ``max_depth`` levels of nesting, and
    at most ``max_alias_nodes`` nodes added by expanding aliases.

    The document is composed into PyYAML's node graph first, where an alias is a second reference to the same
    node (nothing is copied), and that graph is measured before any Python value is built: the nodes it would
    have with every alias expanded, its depth, and whether an alias refers to a node that contains it. Anchors
    and aliases are allowed within the bound (hand-written files use them to share a value), so a "billion
    laughs" document costs the time to read its few bytes, not the expansion.

    Raises:
        UntrustedFileError: as :func:`read_bytes_limited`, or not UTF-8 / not YAML / a tag outside the safe set /
            an alias expanding beyond the bound / a recursive alias / nested too deeply.
    """
    import yaml

    data = read_bytes_limited(path, what=what, max_bytes=max_bytes)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise UntrustedFileError(f"{path}: {what} is not UTF-8 text (byte {err.start})") from None
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        distinct, expanded, depth = yaml_graph_size(node)
        if depth > max_depth:
            raise UntrustedFileError(f"{path}: {what} nests {depth} levels deep, over the limit of {max_depth}")
        if expanded - distinct > max_alias_nodes:
            raise UntrustedFileError(
                f"{path}: {what} uses YAML aliases that expand {distinct} nodes to {expanded}, over the limit of "
                f"{max_alias_nodes} added nodes (an alias-expansion document?)"
            )
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        raise UntrustedFileError(f"{path}: {what} is not valid YAML ({_first_line(err)})") from None
    except RecursionError:  # nesting beyond the interpreter's stack, while composing
        raise UntrustedFileError(f"{path}: {what} nests too deeply (over {max_depth} levels)") from None
    except ValueError as err:
        if isinstance(err, UntrustedFileError):
            raise
        raise UntrustedFileError(f"{path}: {what} holds an unusable value ({_first_line(err)})") from None
    except _RecursiveAlias as err:
        raise UntrustedFileError(f"{path}: {what} has a YAML alias inside the node it names ({err})") from None
    finally:
        loader.dispose()


class _RecursiveAlias(Exception):
    """An alias that refers to a node containing it (a cycle in the node graph)."""


def yaml_graph_size(root: Any) -> tuple[int, int, int]:
    """``(distinct nodes, nodes with every alias expanded, depth)`` of a composed YAML node graph.

    Iterative and memoised per node, so it takes time linear in the distinct nodes even when the expanded count
    is astronomically large.

    Raises:
        _RecursiveAlias: an alias refers to a node that contains it.
    """
    expanded: dict[int, int] = {}
    depth: dict[int, int] = {}
    open_nodes: set[int] = set()  # ancestors of the node being visited
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        children = _yaml_children(node)
        if finished:
            open_nodes.discard(key)
            expanded[key] = 1 + sum(expanded[id(c)] for c in children)
            nested = isinstance(node.value, list)
            depth[key] = (1 + max((depth[id(c)] for c in children), default=0)) if nested else 0
            continue
        if key in expanded:
            continue
        if key in open_nodes:
            raise _RecursiveAlias(f"line {node.start_mark.line + 1}" if node.start_mark else "")
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in expanded)
    return len(expanded), expanded[id(root)], depth[id(root)]


def _yaml_children(node: Any) -> list[Any]:
    value = node.value
    if not isinstance(value, list):
        return []  # a scalar node
    return [item for pair in value for item in pair] if value and isinstance(value[0], tuple) else list(value)


def inside_folder(folder: str | os.PathLike[str], reference: str, *, source: str | os.PathLike[str], what: str) -> Path:
    """The file ``reference`` (a relative path read from ``source``) names inside ``folder``; never outside it.

    Args:
        folder: the folder references must stay in (a model's folder, a dataset's root).
        reference: the path as written in the file.
        source: the file the reference was read from, for the message.
        what: what the reference is, for the message (e.g. ``"external data"``).

    Returns:
        The resolved path (symbolic links followed), inside ``folder``.

    Raises:
        UntrustedFileError: an empty or absolute path, a drive, or one that leads outside ``folder`` (``..``, or
            a symbolic link pointing elsewhere).
    """
    text = str(reference)
    pure = Path(text)
    if not text or "\x00" in text:
        raise UntrustedFileError(f"{source}: {what} path {text!r} is empty or holds a NUL byte")
    if pure.is_absolute() or text.startswith(("/", "\\")) or (len(text) > 1 and text[1] == ":"):
        raise UntrustedFileError(f"{source}: {what} path {text!r} is absolute; only paths inside {folder} are read")
    base = Path(folder).resolve()
    target = (base / pure).resolve()
    if target != base and base not in target.parents:
        raise UntrustedFileError(f"{source}: {what} path {text!r} leads outside {folder}")
    return target


def _first_line(err: BaseException) -> str:
    """An exception's message on one line (YAML errors span several)."""
    text = " ".join(str(err).split()).replace(' in "<unicode string>",', ",")  # PyYAML names no file
    return text[:300] or type(err).__name__
