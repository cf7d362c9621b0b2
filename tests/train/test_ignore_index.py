"""The plan's ignore index reaches every stage that writes "not labelled" pixels (here: the augmentation)."""

from __future__ import annotations

from pathlib import Path

from unetkit.cli import main


def test_training_with_another_ignore_index(isbi_csv, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # The augmentation fills pixels from outside the image with the plan's ignore index, not a fixed 255
    # (with data.ignore_index=254 the loss used to refuse the 255s as class values).
    listing = isbi_csv(tmp_path, range(5))
    args = ["train", str(listing), "--out", str(tmp_path / "run"), "--value-map", "0:1,255:0", "--encoder", "plain",
            "--precision", "fp32", "--set", "model.kwargs.width=4", "--set", "model.kwargs.depth=2",
            "--set", "train.patch_size=[64,64]", "--set", "train.batch_size=4", "--set", "train.time_budget_s=null",
            "--set", "train.steps=6", "--set", "train.align=false", "--set", "data.ignore_index=254"]  # fmt: skip
    assert main(args) == 0
