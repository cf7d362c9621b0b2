"""``train --labels N`` / ``--labels-file``: the labelled subset of the training side; validation unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from unetkit.cli import build_parser
from unetkit.commands.train import build_plan
from unetkit.config import Plan, TrainConfig
from unetkit.data.splits import LabelledSubset, choose_labelled, split_by_seed, training_split

KEYS = [f"case_{i:02d}" for i in range(20)]


def test_a_drawn_subset_is_seeded_nested_and_never_touches_validation() -> None:
    plain = training_split(KEYS, val_fraction=0.25, seed=1)
    assert len(plain.val) == 5 and len(plain.train) == 15
    small = training_split(KEYS, val_fraction=0.25, seed=1, labelled=LabelledSubset(n=4, seed=7))
    large = training_split(KEYS, val_fraction=0.25, seed=1, labelled=LabelledSubset(n=9, seed=7))
    assert small.val == large.val == plain.val  # the validation part does not depend on the subset
    assert len(small.train) == 4 and len(large.train) == 9
    assert set(small.train) < set(large.train) < set(plain.train)  # nested
    # Hand-computed: the first 4 of the seed-7 permutation of the sorted training keys.
    perm = np.random.default_rng(7).permutation(15)
    expected = {sorted(plain.train)[i] for i in perm[:4]}
    assert set(small.train) == expected
    assert training_split(KEYS, val_fraction=0.25, seed=1, labelled=LabelledSubset(n=4, seed=8)).train != small.train
    assert training_split(KEYS, val_fraction=0.25, seed=1, labelled=LabelledSubset(n=4, seed=7)) == small


def test_a_listed_subset_resolves_file_names_and_refuses_validation_or_unknown_cases() -> None:
    train, val = split_by_seed(KEYS, val_fraction=0.25, seed=1)
    chosen = choose_labelled(KEYS, train, names=[f"{train[3]}.png", train[0], "  "])
    assert chosen == [train[0], train[3]]  # in training order
    with pytest.raises(ValueError, match=rf"validation split: {val[0]}"):
        choose_labelled(KEYS, train, names=[train[0], val[0]])
    with pytest.raises(ValueError, match="unknown sample.*nope"):
        choose_labelled(KEYS, train, names=["nope"])
    with pytest.raises(ValueError, match="only 15"):
        choose_labelled(KEYS, train, n=16)
    with pytest.raises(ValueError, match="not both"):
        choose_labelled(KEYS, train, n=2, names=[train[0]])


def test_train_flags_are_recorded_in_the_plan(tmp_path: Path) -> None:
    parser = build_parser()
    base = ["train", "unused", "--out", str(tmp_path / "run"), "--plan", str(tmp_path / "plan.yaml")]
    Plan().save(tmp_path / "plan.yaml")
    plan = build_plan(parser.parse_args([*base, "--labels", "12", "--labels-seed", "3"]))
    assert (plan.train.labels, plan.train.labels_seed, plan.train.labels_keys) == (12, 3, [])
    (tmp_path / "list.txt").write_text("# picked by suggest\nBlowhole/a.jpg\n\nFree/b\n")
    plan = build_plan(parser.parse_args([*base, "--labels-file", str(tmp_path / "list.txt")]))
    assert (plan.train.labels, plan.train.labels_keys) == (0, ["Blowhole/a.jpg", "Free/b"])
    plan.save(tmp_path / "saved.yaml")
    assert Plan.load(tmp_path / "saved.yaml").train.labels_keys == ["Blowhole/a.jpg", "Free/b"]
    with pytest.raises(ValueError, match="give one"):
        build_plan(parser.parse_args([*base, "--labels", "3", "--labels-file", str(tmp_path / "list.txt")]))
    with pytest.raises(SystemExit) as err:
        parser.parse_args([*base, "--labels", "0"])
    assert err.value.code == 2


def test_the_training_loop_split_keeps_only_the_labelled_cases() -> None:
    from unetkit.config import Plan
    from unetkit.runtime.examples import Example, split_examples

    examples = [Example(key=k, image=np.zeros((1, 4, 4), np.float32), mask=np.zeros((4, 4), np.int64)) for k in KEYS]
    plain_train, plain_val = split_examples(examples, list(KEYS), plan=Plan(train=TrainConfig(val_fraction=0.25, seed=1)))
    subset = TrainConfig(val_fraction=0.25, seed=1, labels=3, labels_seed=2)
    train, val = split_examples(examples, list(KEYS), plan=Plan(train=subset))
    assert [e.key for e in val] == [e.key for e in plain_val]
    assert len(train) == 3 and {e.key for e in train} < {e.key for e in plain_train}
    assert [e.key for e in train] == training_split(KEYS, list(KEYS), val_fraction=0.25, seed=1,
                                                    labelled=LabelledSubset(n=3, seed=2)).train



def test_a_run_lists_its_labelled_cases_in_the_form_labels_file_reads(tmp_path: Path) -> None:
    from unetkit.commands.train import build_plan
    from unetkit.config import Plan
    from unetkit.runtime.examples import Example, split_examples
    from unetkit.train.loop import _write_labelled

    keys = [f"Crack/case_{i:02d}" for i in range(20)]  # folder-layout keys: sub-folder and stem
    examples = [Example(key=k, image=np.zeros((1, 4, 4), np.float32), mask=np.zeros((4, 4), np.int64)) for k in keys]
    split = TrainConfig(val_fraction=0.25, seed=1)
    drawn, val = split_examples(examples, keys, plan=Plan(train=TrainConfig(val_fraction=0.25, seed=1, labels=4,
                                                                           labels_seed=2)))
    assert len(drawn) == 4
    _write_labelled(tmp_path, drawn)
    assert (tmp_path / "labelled.txt").read_text() == "".join(f"{e.key}\n" for e in drawn)
    # The next round adds two new names (as suggestions.csv gives them: file names) to the list and trains on both.
    new = [e.key for e in examples if e not in drawn and e not in val][:2]
    with (tmp_path / "labelled.txt").open("a") as f:
        f.write("".join(f"{k.split('/')[1]}.jpg\n" for k in new))
    Plan(train=split).save(tmp_path / "plan.yaml")
    plan = build_plan(build_parser().parse_args(["train", "unused", "--out", str(tmp_path / "run"), "--plan",
                                                 str(tmp_path / "plan.yaml"), "--labels-file",
                                                 str(tmp_path / "labelled.txt")]))  # fmt: skip
    assert (plan.train.val_fraction, plan.train.seed) == (0.25, 1)
    train, val_again = split_examples(examples, keys, plan=plan)
    assert {e.key for e in train} == {e.key for e in drawn} | set(new) and val_again == val
