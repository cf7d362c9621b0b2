"""Train/validation splits as pure functions of sample keys (and groups / labels).

Every function works on *groups*: samples sharing a group (a tile, a patient, a stack) always land on the
same side, so near-duplicates never leak from training into validation. ``groups=None`` means every sample
is its own group. Results are deterministic for a given seed and independent of the input order.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np


class Split(NamedTuple):
    """Keys on each side, in the order they were given (unpacks as ``train, val = split``)."""

    train: list[str]
    val: list[str]


def split_by_seed(
    keys: Sequence[str], groups: Sequence[str] | None = None, *, val_fraction: float, seed: int
) -> Split:
    """Random split of whole groups, holding out about ``val_fraction`` of the samples.

    Groups are shuffled with ``seed`` and moved to validation until it holds at least
    ``round(val_fraction * n)`` samples (at least one group; never all of them).

    Raises:
        ValueError: ``val_fraction`` outside (0, 1), duplicate keys, or fewer than two groups.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    members = _members(keys, groups)
    if len(members) < 2:
        raise ValueError(f"cannot split: all {len(keys)} samples are in one group")
    order = _shuffled(sorted(members), seed)
    target = max(1, round(val_fraction * len(keys)))
    val_groups: set[str] = set()
    count = 0
    for g in order[:-1]:  # the last group always stays in training
        if count >= target:
            break
        val_groups.add(g)
        count += len(members[g])
    return _assemble(keys, groups, val_groups)


def split_by_list(keys: Sequence[str], val_keys: Iterable[str], groups: Sequence[str] | None = None) -> Split:
    """Validation = the listed samples; a listed name may be a key or a file name (with or without extension).

    Raises:
        ValueError: a listed name matches no sample, the list is empty or covers every sample, or a group
            would straddle the split (names the group and the samples on each side).
    """
    resolved: set[str] = set()
    unknown: list[str] = []
    index = _name_index(keys)
    for name in (str(v).strip() for v in val_keys):
        if name:
            key = _resolve_name(name, index)
            (resolved.add(key) if key else unknown.append(name))
    if unknown:
        raise ValueError(f"validation list names {len(unknown)} unknown sample(s): {', '.join(unknown[:10])}")
    if not resolved or len(resolved) == len(set(keys)):
        raise ValueError("the validation list must name some, but not all, samples")
    gs = list(groups) if groups is not None else list(keys)
    for g, ks in _members(keys, gs).items():
        inside = [k for k in ks if k in resolved]
        if inside and len(inside) != len(ks):
            outside = [k for k in ks if k not in resolved]
            raise ValueError(
                f"group {g!r} would straddle the split: {inside[:3]} in validation, {outside[:3]} in training"
            )
    return _assemble(keys, groups, {g for k, g in zip(keys, gs, strict=True) if k in resolved})


def _name_index(keys: Sequence[str]) -> dict[str, list[str]]:
    """Every trailing part of every key (``a/b/c`` -> ``a/b/c``, ``b/c``, ``c``) -> the keys it names."""
    index: dict[str, list[str]] = defaultdict(list)
    for k in keys:
        parts = k.split("/")
        for i in range(len(parts)):
            index["/".join(parts[i:])].append(k)
    return index


def _resolve_name(name: str, index: dict[str, list[str]]) -> str | None:
    """A key from a listed name: the key itself, or a (relative) file name with or without extension.

    Raises:
        ValueError: the name fits several samples (e.g. the same file name in two folders).
    """
    base = name.replace("\\", "/").strip("/")
    folder, _, file = base.rpartition("/")
    prefix = folder + "/" if folder else ""
    # "x.nii.gz" -> try "x.nii.gz", "x.nii", "x" (keys never carry the extension).
    pieces = file.split(".")
    for cand in [prefix + ".".join(pieces[:n]) for n in range(len(pieces), 0, -1)]:
        hits = index.get(cand, [])
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise ValueError(f"validation list entry {name!r} fits several samples: {', '.join(hits[:5])}")
    return None


def read_key_list(path: str | Path) -> list[str]:
    """Read a validation list: one key or file name per line; blank lines and ``#`` comments are skipped."""
    lines = Path(path).read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def kfold(keys: Sequence[str], groups: Sequence[str] | None = None, *, k: int, fold: int, seed: int) -> Split:
    """Fold ``fold`` of a ``k``-fold cross-validation over groups.

    Shuffled groups are dealt, largest first, to the fold with the fewest samples so far, so folds have
    near-equal sample counts; each group appears in exactly one fold's validation set.

    Raises:
        ValueError: ``k < 2``, ``fold`` outside ``0..k-1``, or fewer groups than folds.
    """
    if k < 2:
        raise ValueError(f"k-fold needs k >= 2, got {k}")
    if not 0 <= fold < k:
        raise ValueError(f"fold must be in 0..{k - 1}, got {fold}")
    members = _members(keys, groups)
    if len(members) < k:
        raise ValueError(f"cannot make {k} folds from {len(members)} group(s)")
    order = _shuffled(sorted(members), seed)
    order.sort(key=lambda g: -len(members[g]))  # stable: ties keep the shuffled order
    sizes = [0] * k
    assignment: dict[str, int] = {}
    for g in order:
        target = min(range(k), key=lambda i: (sizes[i], i))
        assignment[g] = target
        sizes[target] += len(members[g])
    return _assemble(keys, groups, {g for g, f in assignment.items() if f == fold})


def stratified_split(
    keys: Sequence[str],
    labels: Sequence[str],
    groups: Sequence[str] | None = None,
    *,
    val_fraction: float,
    seed: int,
) -> Split:
    """Like :func:`split_by_seed`, but each label (e.g. a class folder) is split separately, so every label
    with at least two groups is present on both sides in about the same proportion.

    A group whose samples carry different labels is stratified under its most common label.

    Raises:
        ValueError: bad ``val_fraction``, length mismatch, or fewer than two groups overall.
    """
    if len(labels) != len(keys):
        raise ValueError(f"got {len(labels)} labels for {len(keys)} keys")
    gs = list(groups) if groups is not None else list(keys)
    members = _members(keys, gs)
    if len(members) < 2:
        raise ValueError(f"cannot split: all {len(keys)} samples are in one group")
    votes: dict[str, Counter] = defaultdict(Counter)
    for g, lab in zip(gs, labels, strict=True):
        votes[g][lab] += 1
    by_label: dict[str, list[str]] = defaultdict(list)
    for g in sorted(members):
        by_label[sorted(votes[g].items(), key=lambda kv: (-kv[1], kv[0]))[0][0]].append(g)
    val_groups: set[str] = set()
    for i, label in enumerate(sorted(by_label)):
        label_groups = by_label[label]
        if len(label_groups) < 2:
            continue  # a single group cannot be split: it stays in training
        sub_keys = [k for g in label_groups for k in members[g]]
        sub_groups = [g for g in label_groups for _ in members[g]]
        part = set(split_by_seed(sub_keys, sub_groups, val_fraction=val_fraction, seed=seed + i).val)
        val_groups |= {g for k, g in zip(sub_keys, sub_groups, strict=True) if k in part}
    if not val_groups:
        raise ValueError("stratified split left validation empty: every label has a single group")
    return _assemble(keys, gs, val_groups)


@dataclass(frozen=True)
class LabelledSubset:
    """Which training samples keep their labels (``train --labels N --labels-seed S`` / ``--labels-file``).

    ``keys`` (names, as in :func:`choose_labelled`) win; else ``n`` samples drawn with ``seed``; ``n=0``: all.
    """

    n: int = 0
    seed: int = 0
    keys: tuple[str, ...] = ()

    @classmethod
    def of(cls, train: Any) -> LabelledSubset:
        """From a :class:`~unetkit.config.TrainConfig` (its ``labels``, ``labels_seed``, ``labels_keys``)."""
        return cls(n=int(train.labels), seed=int(train.labels_seed), keys=tuple(train.labels_keys))

    @property
    def active(self) -> bool:
        return bool(self.n or self.keys)


def training_split(
    keys: Sequence[str],
    groups: Sequence[str] | None = None,
    *,
    val_fraction: float,
    seed: int,
    folds: int = 0,
    fold: int = 0,
    labelled: LabelledSubset = LabelledSubset(),
) -> Split:
    """The split a training run uses: validation first (fold ``fold`` of ``folds`` when ``folds >= 2``, else
    about ``val_fraction`` by :func:`split_by_seed`; none for fewer than two samples or ``val_fraction <= 0``),
    then the labelled subset of the training side, so the validation part does not depend on the subset.

    Raises:
        ValueError: as :func:`kfold`, :func:`split_by_seed` and :func:`choose_labelled`.
    """
    if folds:
        train, val = kfold(keys, groups, k=folds, fold=fold, seed=seed)
    elif len(keys) < 2 or val_fraction <= 0:
        train, val = list(keys), []
    else:
        train, val = split_by_seed(keys, groups, val_fraction=val_fraction, seed=seed)
    if labelled.active:
        train = choose_labelled(keys, train, n=labelled.n if not labelled.keys else 0, seed=labelled.seed,
                                names=labelled.keys)
    return Split(train=train, val=val)


def choose_labelled(
    keys: Sequence[str], train_keys: Sequence[str], *, n: int = 0, seed: int = 0, names: Sequence[str] = ()
) -> list[str]:
    """The training samples that keep their labels: the listed ``names``, else ``n`` drawn with ``seed``.

    ``keys`` are all samples (to tell a name on the validation side from an unknown one), ``train_keys`` the
    training side of the split. A drawn subset is nested: the ``n`` samples for a seed are the first ``n``
    of one seeded permutation of the sorted training keys, so a larger ``n`` keeps every smaller subset.
    ``n=0`` and no names: every training sample. Names resolve like :func:`split_by_list` (key or file name,
    with or without extension). Returns keys in the order of ``train_keys``.

    Raises:
        ValueError: ``n`` negative or above the number of training samples, both ``n`` and ``names``,
            a name that matches no sample or one on the validation side.
    """
    if n < 0:
        raise ValueError(f"the number of labelled samples must be positive, got {n}")
    if n and names:
        raise ValueError("give either a number of labelled samples or a list of them, not both")
    if names:
        index, inside = _name_index(keys), set(train_keys)
        chosen: set[str] = set()
        unknown, held_out = [], []
        for name in (str(v).strip() for v in names if str(v).strip()):
            key = _resolve_name(name, index)
            if key is None:
                unknown.append(name)
            elif key not in inside:
                held_out.append(name)
            else:
                chosen.add(key)
        if unknown:
            raise ValueError(f"labelled list names {len(unknown)} unknown sample(s): {', '.join(unknown[:10])}")
        if held_out:
            raise ValueError(f"labelled list names {len(held_out)} sample(s) of the validation split: "
                             f"{', '.join(held_out[:10])}")
        if not chosen:
            raise ValueError("the labelled list is empty")
        return [k for k in train_keys if k in chosen]
    if not n:
        return list(train_keys)
    if n > len(train_keys):
        raise ValueError(f"asked for {n} labelled samples but the training split has only {len(train_keys)}")
    chosen = set(_shuffled(sorted(train_keys), seed)[:n])
    return [k for k in train_keys if k in chosen]


def _members(keys: Sequence[str], groups: Sequence[str] | None) -> dict[str, list[str]]:
    if len(set(keys)) != len(keys):
        dupes = [k for k, n in Counter(keys).items() if n > 1]
        raise ValueError(f"duplicate sample keys: {dupes[:5]}")
    gs = list(groups) if groups is not None else list(keys)
    if len(gs) != len(keys):
        raise ValueError(f"got {len(gs)} groups for {len(keys)} keys")
    members: dict[str, list[str]] = defaultdict(list)
    for k, g in zip(keys, gs, strict=True):
        members[str(g)].append(k)
    return dict(members)


def _shuffled(items: list[str], seed: int) -> list[str]:
    perm = np.random.default_rng(seed).permutation(len(items))
    return [items[i] for i in perm]


def _assemble(keys: Sequence[str], groups: Sequence[str] | None, val_groups: set[str]) -> Split:
    gs = list(groups) if groups is not None else list(keys)
    val = [k for k, g in zip(keys, gs, strict=True) if str(g) in val_groups]
    train = [k for k, g in zip(keys, gs, strict=True) if str(g) not in val_groups]
    return Split(train=train, val=val)
