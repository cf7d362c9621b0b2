"""``train(init_from=RUN/best)``: a fine-tune starts from a saved model's weights (the Label Studio backend's
fine-tunes), not from a fresh initialisation."""

from __future__ import annotations

from pathlib import Path

import torch

from unetkit.cli import main
from unetkit.config import Plan, apply_overrides
from unetkit.models.base import load_model
from unetkit.train.loop import train


def _parameters(folder: Path) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in load_model(folder).named_parameters()}


def test_a_fine_tune_starts_from_the_saved_weights(datasets: Path, tmp_path: Path) -> None:
    root = datasets / "isbi2012_em_membrane"
    data = tmp_path / "train.csv"
    data.write_text("image,mask\n" + "".join(f"{root}/images/{i}.png,{root}/masks/{i}.png\n" for i in range(4)))
    tiny = ["--value-map", "0:1,255:0", "--encoder", "plain", "--set", "model.kwargs.width=4", "--set", "model.kwargs.depth=2",
            "--set", "train.patch_size=[64,64]", "--set", "train.batch_size=2", "--set", "train.time_budget_s=null",
            "--set", "train.steps=4", "--set", "train.warmup_steps=1", "--set", "train.align=false",
            "--set", "infer.tile_size=[128,128]"]  # fmt: skip
    assert main(["train", str(data), "--out", str(tmp_path / "first"), *tiny]) == 0
    start = _parameters(tmp_path / "first" / "best")
    # a vanishing learning rate: the parameters stay where they started (batch-norm statistics move: not compared)
    plan = apply_overrides(Plan.load(tmp_path / "first" / "plan.yaml"), ["train.lr=1e-12", "train.steps=2", "train.seed=7"])
    train(plan, tmp_path / "tuned", init_from=tmp_path / "first" / "best")
    train(plan, tmp_path / "fresh")
    tuned, fresh = _parameters(tmp_path / "tuned" / "last"), _parameters(tmp_path / "fresh" / "last")
    assert all(torch.allclose(tuned[k], start[k], atol=1e-6) for k in start)
    assert not all(torch.allclose(fresh[k], start[k], atol=1e-2) for k in start)
