"""Splits: deterministic, group-preserving, right sizes; k-fold partitions; stratification; explicit lists."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from unetkit.data.splits import kfold, read_key_list, split_by_list, split_by_seed, stratified_split

KEYS = [f"s{i:02d}" for i in range(20)]
GROUPS = [f"g{i // 4}" for i in range(20)]  # 5 groups of 4


def groups_of(keys: list[str]) -> set[str]:
    lookup = dict(zip(KEYS, GROUPS, strict=True))
    return {lookup[k] for k in keys}


def test_split_by_seed_is_deterministic_and_keeps_groups_whole() -> None:
    a = split_by_seed(KEYS, GROUPS, val_fraction=0.2, seed=3)
    b = split_by_seed(list(reversed(KEYS)), list(reversed(GROUPS)), val_fraction=0.2, seed=3)
    assert set(a.val) == set(b.val)
    assert set(a.train) | set(a.val) == set(KEYS) and not set(a.train) & set(a.val)
    assert not groups_of(a.train) & groups_of(a.val)
    assert len(a.val) == 4  # one group of 4 = 20% exactly
    train, val = a  # unpacks like a tuple
    assert train == a.train and val == a.val


def test_split_by_seed_changes_with_seed_and_without_groups_hits_the_fraction() -> None:
    vals = {tuple(split_by_seed(KEYS, None, val_fraction=0.25, seed=s).val) for s in range(6)}
    assert len(vals) > 1
    assert all(len(v) == 5 for v in vals)
    assert split_by_seed(KEYS, None, val_fraction=0.25, seed=0).train == [
        k for k in KEYS if k not in split_by_seed(KEYS, None, val_fraction=0.25, seed=0).val
    ]  # input order kept


def test_split_by_seed_errors() -> None:
    with pytest.raises(ValueError, match="one group"):
        split_by_seed(KEYS, ["same"] * 20, val_fraction=0.2, seed=0)
    with pytest.raises(ValueError, match="between 0 and 1"):
        split_by_seed(KEYS, None, val_fraction=1.0, seed=0)
    with pytest.raises(ValueError, match="duplicate"):
        split_by_seed(["a", "a", "b"], None, val_fraction=0.5, seed=0)


def test_tiny_fraction_still_holds_out_one_group_but_never_everything() -> None:
    s = split_by_seed(["a", "b"], None, val_fraction=0.01, seed=0)
    assert len(s.val) == 1 and len(s.train) == 1
    s = split_by_seed(["a", "b", "c"], ["x", "x", "y"], val_fraction=0.99, seed=1)
    assert s.train and s.val


def test_kfold_partitions_every_sample_exactly_once_by_group() -> None:
    folds = [kfold(KEYS, GROUPS, k=5, fold=f, seed=0) for f in range(5)]
    seen = Counter(k for f in folds for k in f.val)
    assert seen == Counter(KEYS)
    for f in folds:
        assert len(f.val) == 4 and not groups_of(f.train) & groups_of(f.val)
    uneven = [kfold(KEYS, None, k=3, fold=f, seed=1) for f in range(3)]
    assert sorted(len(f.val) for f in uneven) == [6, 7, 7]


def test_kfold_errors() -> None:
    with pytest.raises(ValueError, match="cannot make 6 folds from 5 group"):
        kfold(KEYS, GROUPS, k=6, fold=0, seed=0)
    with pytest.raises(ValueError, match="fold must be in 0..2"):
        kfold(KEYS, None, k=3, fold=3, seed=0)
    with pytest.raises(ValueError, match="k >= 2"):
        kfold(KEYS, None, k=1, fold=0, seed=0)


def test_stratified_split_puts_every_label_on_both_sides() -> None:
    labels = ["crack"] * 10 + ["blowhole"] * 6 + ["fray"] * 4
    s = stratified_split(KEYS, labels, None, val_fraction=0.25, seed=0)
    lab = dict(zip(KEYS, labels, strict=True))
    val_counts = Counter(lab[k] for k in s.val)
    assert val_counts == {"crack": 2, "blowhole": 2, "fray": 1}  # round(2.5)=2, round(1.5)=2, round(1.0)=1
    assert all(any(lab[k] == name for k in s.train) for name in ("crack", "blowhole", "fray"))


def test_stratified_split_respects_groups_and_single_group_labels() -> None:
    labels = ["a"] * 8 + ["b"] * 12
    s = stratified_split(KEYS, labels, GROUPS, val_fraction=0.3, seed=2)
    assert not groups_of(s.train) & groups_of(s.val)
    only = stratified_split(["x1", "x2", "y1"], ["x", "x", "y"], None, val_fraction=0.5, seed=0)
    assert "y1" in only.train  # a label with one group cannot be split; it trains


def test_split_by_list_accepts_keys_and_file_names(tmp_path: Path) -> None:
    keys = ["tile_1/a", "tile_1/b", "tile_2/a", "case.v2"]
    path = tmp_path / "val.txt"
    path.write_text("# held out\ntile_2/a.png\n\ncase.v2.nii.gz\n")
    s = split_by_list(keys, read_key_list(path))
    assert s.val == ["tile_2/a", "case.v2"] and s.train == ["tile_1/a", "tile_1/b"]


def test_split_by_list_errors() -> None:
    keys = ["tile_1/a", "tile_1/b", "tile_2/a"]
    with pytest.raises(ValueError, match="'a.png' fits several samples"):
        split_by_list(keys, ["a.png"])
    with pytest.raises(ValueError, match="unknown sample"):
        split_by_list(keys, ["zzz"])
    with pytest.raises(ValueError, match="straddle"):
        split_by_list(keys, ["tile_1/a"], groups=["t1", "t1", "t2"])
    with pytest.raises(ValueError, match="some, but not all"):
        split_by_list(keys, keys)
