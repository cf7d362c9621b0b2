"""The model section of a plan is the model's own typed config: one class per built-in model holds its options
and defaults (unetkit.model_config, no torch); plans, ``--set`` and the models themselves all go through it."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

import unetkit
from unetkit.cli import main
from unetkit.config import ModelConfig, Plan, apply_overrides
from unetkit.data.fingerprint import DataFingerprint
from unetkit.data.options import DataConfig
from unetkit.model_config import MODEL_CONFIGS, SegModelConfig, UNetPlusPlusConfig
from unetkit.train.plan import make_plan


def test_every_built_in_segmentation_model_builds_from_its_listed_config() -> None:
    segmentation = [n for n in unetkit.list_models() if n != "diffusion_unet"]
    assert sorted(MODEL_CONFIGS) == sorted(segmentation)
    for name, config_class in MODEL_CONFIGS.items():
        model = unetkit.create_model(name, width=4, depth=2)
        assert type(model).config_class is config_class  # type: ignore[attr-defined]
        assert isinstance(model.config, config_class)  # type: ignore[attr-defined]
    assert issubclass(UNetPlusPlusConfig, SegModelConfig)


def _fingerprint(**over: object) -> DataFingerprint:
    base = {"num_samples": 10, "spatial_dims": 2, "channels": [1], "sizes": {"median": [512, 512]},
            "classes": ["0", "1"], "foreground_fraction": 0.2, "dtypes": ["uint8"]}  # fmt: skip
    return DataFingerprint.from_dict({**base, **over})


@pytest.mark.parametrize("pretrained", [False, True])
def test_a_planned_model_section_is_its_typed_config(pretrained: bool) -> None:
    plan = make_plan(DataConfig(task="binary"), _fingerprint(), pretrained=pretrained)
    typed = plan.model.typed()
    assert isinstance(typed, SegModelConfig)
    # Options the planner did not set keep the config class's defaults (one place for them).
    defaults = SegModelConfig()
    for f in dataclasses.fields(SegModelConfig):
        expected = plan.model.kwargs.get(f.name, getattr(defaults, f.name))
        assert getattr(typed, f.name) == expected, f.name


def test_unknown_and_mistyped_options_are_named() -> None:
    with pytest.raises(ValueError, match=r"^model.kwargs.widht: model 'unet' has no such option; valid: act, "):
        ModelConfig("unet", {"widht": 8}).typed()
    with pytest.raises(ValueError, match=r"^model.kwargs.depth: expected int, got '4' \(str\)$"):
        Plan.from_dict({"model": {"name": "unet", "kwargs": {"depth": "4"}}})
    with pytest.raises(ValueError, match=r"model.kwargs.deep_supervision: model 'unet' has no such option"):
        apply_overrides(Plan(), ["model.kwargs.deep_supervision=true"])
    plan = apply_overrides(Plan(), ["model.name=unetplusplus", "model.kwargs.deep_supervision=true"])
    assert plan.model.typed() == UNetPlusPlusConfig(deep_supervision=True)
    # Models outside the built-in family check their own arguments.
    assert ModelConfig("diffusion_unet", {"base_channels": 8}).typed() is None


def test_train_refuses_a_misspelt_model_option_before_reading_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", str(tmp_path / "no_data_here"), "--out", str(tmp_path / "run"),
                 "--set", "model.kwargs.widht=8"]) == 1  # fmt: skip
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model.kwargs.widht: model 'unet' has no such option" in err
    assert not (tmp_path / "run").exists()


def test_the_typed_configs_import_without_torch() -> None:
    code = "import sys, unetkit.model_config, unetkit.config; assert 'torch' not in sys.modules, 'torch'"
    subprocess.run([sys.executable, "-c", code], check=True)
