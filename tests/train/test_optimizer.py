"""Optimiser parameter groups (encoder learning-rate scale) and the weights' moving average, by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from unetkit.cli import main
from unetkit.models.ema import ema_decay_at
from unetkit.models.ema import update_ema as _update_ema
from unetkit.models.factory import create_model
from unetkit.train.setup import build_optimizer


def _model() -> torch.nn.Module:
    return create_model("unet", in_channels=1, classes=2, encoder="plain", depth=2, width=4)


def test_one_group_without_scale() -> None:
    model = _model()
    opt = build_optimizer(model, name="adamw", lr=1e-3, weight_decay=0.0)
    assert len(opt.param_groups) == 1
    assert opt.param_groups[0]["lr"] == 1e-3
    assert sum(p.numel() for p in opt.param_groups[0]["params"]) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_encoder_group_gets_scaled_lr(name: str) -> None:
    model = _model()
    opt = build_optimizer(model, name=name, lr=3e-3, weight_decay=0.0, encoder_lr_scale=0.25)
    rest, enc = opt.param_groups
    assert {id(p) for p in enc["params"]} == {id(p) for p in model.encoder.parameters()}
    assert not {id(p) for p in rest["params"]} & {id(p) for p in enc["params"]}
    assert len(rest["params"]) + len(enc["params"]) == len(list(model.parameters()))
    assert (rest["lr"], rest["lr_scale"]) == (3e-3, 1.0)
    assert (enc["lr"], enc["lr_scale"]) == (pytest.approx(7.5e-4), 0.25)


def test_frozen_parameters_are_left_out_and_bad_scale_refused() -> None:
    model = _model()
    for p in model.encoder.parameters():
        p.requires_grad_(False)
    opt = build_optimizer(model, name="adamw", lr=1e-3, weight_decay=0.0, encoder_lr_scale=0.5)
    assert len(opt.param_groups) == 1  # the empty encoder group is dropped
    with pytest.raises(ValueError, match="encoder_lr_scale"):
        build_optimizer(model, name="adamw", lr=1e-3, weight_decay=0.0, encoder_lr_scale=0.0)


@pytest.mark.parametrize(
    ("step", "expected"),
    [(1, 2 / 11), (10, 11 / 20), (90, 91 / 100), (10_000, 0.99)],
)
def test_ema_decay_warms_up_to_its_ceiling(step: int, expected: float) -> None:
    assert ema_decay_at(step, decay=0.99) == pytest.approx(expected, abs=1e-12)


def test_ema_decay_rejects_out_of_range() -> None:
    with pytest.raises(ValueError, match="decay"):
        ema_decay_at(3, decay=1.0)


def test_ema_update_by_hand() -> None:
    model, ema = torch.nn.BatchNorm1d(2), torch.nn.BatchNorm1d(2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([3.0, 5.0]))
        ema.weight.copy_(torch.tensor([1.0, 1.0]))
    model.num_batches_tracked.fill_(7)
    _update_ema(ema, model, decay=0.75)
    assert torch.allclose(ema.weight, torch.tensor([0.75 * 1 + 0.25 * 3, 0.75 * 1 + 0.25 * 5]))
    assert int(ema.num_batches_tracked) == 7  # integer buffers are copied, not averaged


def test_training_applies_the_encoder_scale_and_keeps_an_ema(datasets: Path, tmp_path: Path) -> None:
    root = datasets / "isbi2012_em_membrane"
    data = tmp_path / "train.csv"
    data.write_text("image,mask\n" + "".join(f"{root}/images/{i}.png,{root}/masks/{i}.png\n" for i in range(3)))
    run = tmp_path / "run"
    args = [
        "train", str(data), "--out", str(run), "--value-map", "0:1,255:0", "--encoder", "plain",
        "--set", "model.kwargs.width=4", "--set", "model.kwargs.depth=2",
        "--set", "train.patch_size=[32,32]", "--set", "train.batch_size=2",
        "--set", "train.time_budget_s=null", "--set", "train.steps=6", "--set", "train.warmup_steps=0",
        "--set", "train.schedule=constant", "--set", "train.lr=0.002", "--set", "train.encoder_lr_scale=0.1",
        "--set", "train.ema=0.9", "--set", "train.align=false",
    ]  # fmt: skip
    assert main(args) == 0
    meta = json.loads((run / "state.json").read_text())
    assert [(g["lr"], g["lr_scale"]) for g in meta["param_groups"]] == [(0.002, 1.0), (pytest.approx(0.0002), 0.1)]
    tensors = load_file(str(run / meta["tensors"]))
    head = "head.weight"
    assert not torch.equal(tensors[f"ema.{head}"], tensors[f"model.{head}"])  # the average lags the weights
    saved = load_file(str(run / "last" / "model.safetensors"))
    assert torch.equal(saved[head], tensors[f"ema.{head}"])  # checkpoints hold the average
