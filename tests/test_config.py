"""Plan fields are checked against their declared types, whether they come from --set or from a plan file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from unetkit.cli import main
from unetkit.config import Plan, apply_overrides
from unetkit.data.options import DataConfig


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lr=abc", "train.lr: expected float, got 'abc' (str)"),
        ("train.steps=1.5", "train.steps: expected int, got 1.5 (float)"),
        ("train.steps=true", "train.steps: expected int, got True (bool)"),
        ("train.patch_size=64", "train.patch_size: expected list[int], got 64 (int)"),
        ("train.patch_size=[64, x]", "train.patch_size: expected list[int], got [64, 'x'] (list)"),
        ("infer.tta=3", "infer.tta: expected str, got 3 (int)"),
        ("data.value_map={0: a}", "data.value_map: expected dict[int, int] | None"),
    ],
)
def test_wrong_types_are_refused_naming_the_field(override: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("[", r"\[").replace("|", r"\|").replace("(", r"\(")
                       .replace(")", r"\)")):
        apply_overrides(Plan(), [override])


def test_right_types_pass_and_ints_count_as_floats() -> None:
    plan = apply_overrides(Plan(), ["train.lr=1", "train.ema=null", "train.patch_size=[64,48]",
                                    "data.value_map={0: 1, 255: 0}", "model.kwargs.width=8"])
    assert plan.train.lr == 1 and plan.train.ema is None and plan.train.patch_size == [64, 48]
    assert plan.data.value_map == {0: 1, 255: 0} and plan.model.kwargs == {"width": 8}


def test_a_plan_file_with_a_wrong_type_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text("train:\n  batch_size: four\n")
    # The message names the file first (a plan given with --plan, or a run's plan.yaml), then the field.
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: train.batch_size: expected int, got 'four' \(str\)$"):
        Plan.load(path)
    path.write_text("train: [1, 2]\n")
    with pytest.raises(ValueError, match="plan section 'train' must be a mapping, got list"):
        Plan.load(path)


def test_train_refuses_a_bad_set_value_before_reading_any_data(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    # The data folder does not exist: an error about it would mean the data was looked at first.
    code = main(["train", str(tmp_path / "no-such-data"), "--out", str(tmp_path / "run"), "--set", "train.lr=abc"])
    err = capsys.readouterr().err
    assert code != 0 and "train.lr: expected float, got 'abc' (str)" in err and "no-such-data" not in err
    assert "Traceback" not in err and not (tmp_path / "run").exists()


def test_a_json_plan_keeps_integer_mapping_keys(tmp_path: Path) -> None:
    # JSON writes {255: 0} as {"255": 0}; a plan saved as JSON (and a checkpoint's carried plan) reads back equal.
    plan = Plan(data=DataConfig(value_map={0: 1, 255: 0}, colour_table={"road": [1, 2, 3]}))
    plan.save(tmp_path / "plan.json")
    assert '"255": 0' in (tmp_path / "plan.json").read_text()
    back = Plan.load(tmp_path / "plan.json")
    assert back.data.value_map == {0: 1, 255: 0} and back.to_dict() == plan.to_dict()
    with pytest.raises(ValueError, match=r"data.value_map: expected dict\[int, int\] \| None"):
        Plan.from_dict({"data": {"value_map": {"zero": 1}}})
