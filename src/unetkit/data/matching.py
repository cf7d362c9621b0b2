"""Pair image files with mask files by name: exact stems first, then unambiguous shared IDs.

Pure functions on keys (``"sub/folder/stem"`` strings), so the rules are easy to test:

1. exact key match (``a/x.jpg`` <-> ``a/x.png``);
2. inside one folder, the longest common run of leading name tokens (tokens split at ``_ - . space``), when
   that run contains an ID (a token with a digit) or is the whole of one name: ``21_training`` <->
   ``21_manual1``, ``scan_7`` <-> ``scan_7_mask``;
3. inside one folder, the same sequence of numbers: ``img_001`` <-> ``label_001``.

A pair from rules 2-3 is only made when it is each side's single best candidate; everything else stays
unmatched and is reported.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable

_TOKEN_SPLIT = re.compile(r"[_\-\s.]+")
_DIGITS = re.compile(r"\d+")


def split_key(key: str) -> tuple[str, str]:
    """``("sub/folder", "stem")``; the folder is ``""`` for a top-level file."""
    folder, _, stem = key.rpartition("/")
    return folder, stem


def tokens(stem: str) -> list[str]:
    """Lower-case name tokens: ``"21_Training-mask"`` -> ``["21", "training", "mask"]``."""
    return [t for t in _TOKEN_SPLIT.split(stem.lower()) if t]


def _prefix_score(a: str, b: str) -> int:
    """Number of shared leading tokens, or 0 when the shared run is not a trustworthy ID."""
    ta, tb = tokens(a), tokens(b)
    n = 0
    while n < min(len(ta), len(tb)) and ta[n] == tb[n]:
        n += 1
    if n == 0:
        return 0
    has_id = any(any(ch.isdigit() for ch in t) for t in ta[:n])
    whole_name = n == len(ta) or n == len(tb)
    return n if (has_id or whole_name) else 0


def _number_score(a: str, b: str) -> int:
    na, nb = [int(x) for x in _DIGITS.findall(a)], [int(x) for x in _DIGITS.findall(b)]
    return 1 if na and na == nb else 0


def _number_bucket(stem: str) -> tuple[int, ...]:
    return tuple(int(x) for x in _DIGITS.findall(stem))


def _first_token(stem: str) -> str:
    t = tokens(stem)
    return t[0] if t else ""


def _mutual_best(
    left: list[str], right: list[str], score: Callable[[str, str], int], bucket: Callable[[str], object]
) -> dict[str, str]:
    """Pairs (l, r) where r is l's unique best (score > 0) and l is r's unique best.

    Only names in the same bucket can score above 0, so only those are compared (keeps this linear-ish
    for large folders).
    """
    by_bucket: dict[object, list[str]] = defaultdict(list)
    for b in right:
        by_bucket[bucket(b)].append(b)
    best_for: dict[str, list[tuple[int, str]]] = defaultdict(list)  # right item -> [(score, left)]
    chosen: dict[str, str] = {}
    for a in left:
        scored = [(score(a, b), b) for b in by_bucket.get(bucket(a), [])]
        scored = [(s, b) for s, b in scored if s > 0]
        for s, b in scored:
            best_for[b].append((s, a))
        if scored:
            top = max(s for s, _ in scored)
            winners = [b for s, b in scored if s == top]
            if len(winners) == 1:
                chosen[a] = winners[0]
    pairs = {}
    for a, b in chosen.items():
        top = max(s for s, _ in best_for[b])
        if [x for s, x in best_for[b] if s == top] == [a]:
            pairs[a] = b
    return pairs


def match_keys(image_keys: Iterable[str], mask_keys: Iterable[str]) -> dict[str, str]:
    """Pair image keys with mask keys (rules in the module docstring).

    Args:
        image_keys: ``"folder/stem"`` keys of the images (unique).
        mask_keys: keys of the masks (unique).

    Returns:
        image key -> mask key for every pair found; keys absent from it are unmatched.
    """
    images, masks = list(image_keys), list(mask_keys)
    mask_set = set(masks)
    pairs = {k: k for k in images if k in mask_set}
    left_by_folder: dict[str, list[str]] = defaultdict(list)
    right_by_folder: dict[str, list[str]] = defaultdict(list)
    for k in images:
        if k not in pairs:
            left_by_folder[split_key(k)[0]].append(k)
    for k in masks:
        if k not in mask_set.intersection(pairs):
            right_by_folder[split_key(k)[0]].append(k)
    for folder, left in left_by_folder.items():
        right = right_by_folder.get(folder, [])
        for score, bucket in ((_prefix_score, _first_token), (_number_score, _number_bucket)):
            stems_l = {split_key(k)[1]: k for k in left}
            stems_r = {split_key(k)[1]: k for k in right}
            found = _mutual_best(list(stems_l), list(stems_r), score, bucket)
            used = set()
            for a, b in found.items():
                pairs[stems_l[a]] = stems_r[b]
                used.add(stems_r[b])
            left = [k for k in left if k not in pairs]
            right = [k for k in right if k not in used]
    return pairs
