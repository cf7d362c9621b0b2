"""Contract tests for every registered segmentation model, generated from the registry.

A model registered later is picked up automatically: it must keep the input size, produce ``classes``
channels, pass gradients to its first encoder conv and survive a save/load round trip bit-exactly.
"""

from __future__ import annotations

import json
import pickle

import pytest
import torch
import torch.nn as nn

import unetkit
from unetkit.models.base import CHECKPOINT_FORMAT_VERSION, SegmentationModel
from unetkit.models.factory import supported_spatial_dims

TINY = {"width": 4, "depth": 3}
SIZES = {2: [(97, 131), (64, 64)], 3: [(37, 41, 29)]}


def _registered_segmentation_classes() -> dict[str, type[SegmentationModel]]:
    # Walk the subclasses instead of reading registry internals; register_model stamps each decorated
    # class with its own ``registry_name`` (inherited names are skipped by reading __dict__).
    unetkit.list_models()  # imports the built-in models
    found: dict[str, type[SegmentationModel]] = {}
    stack: list[type] = [SegmentationModel]
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        name = cls.__dict__.get("registry_name")
        if name:
            found[name] = cls
    return {name: found[name] for name in unetkit.list_models() if name in found}


SEG_MODELS = sorted(_registered_segmentation_classes())
CASES = [
    (name, dims, size) for name in SEG_MODELS for dims in supported_spatial_dims(name) for size in SIZES[dims]
]


def _tiny(name: str, *, dims: int = 2, in_channels: int = 2, classes: int = 3, **kw) -> SegmentationModel:
    torch.manual_seed(0)
    model = unetkit.create_model(
        name, in_channels=in_channels, classes=classes, spatial_dims=dims, **{**TINY, **kw}
    )
    assert isinstance(model, SegmentationModel)
    return model


def _first_encoder_conv(model: nn.Module) -> nn.Module:
    return next(m for m in model.encoder.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d)))


def _conv_params(c_in: int, c_out: int, k: int) -> int:
    return k * k * c_in * c_out + c_out


def test_registry_lists_the_segmentation_models():
    assert {"unet", "attention_unet", "unetplusplus"} <= set(SEG_MODELS)
    # diffusion_unet (if registered) is not a SegmentationModel and must not be tested here
    assert "diffusion_unet" not in SEG_MODELS


@pytest.mark.parametrize(
    ("name", "dims", "size"), CASES, ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else str(v)
)
def test_output_shape_and_gradient_reach_first_conv(name, dims, size):
    model = _tiny(name, dims=dims).train()
    batch = 2 if dims == 2 else 1  # 3D convolutions are slow on CPU
    out = model(torch.randn(batch, 2, *size))
    assert isinstance(out, torch.Tensor)
    assert out.shape == (batch, 3, *size)
    out.square().mean().backward()
    grad = _first_encoder_conv(model).weight.grad
    assert grad is not None and grad.abs().sum() > 0


@pytest.mark.parametrize("name", SEG_MODELS)
@pytest.mark.parametrize("dims", [2, 3])
def test_save_load_round_trip_is_bit_exact(name, dims, tmp_path, monkeypatch):
    if dims not in supported_spatial_dims(name):
        pytest.skip(f"{name} is not {dims}D")
    model = _tiny(name, dims=dims, norm="batch")
    model.train()
    with torch.no_grad():  # move BN running stats away from their init so they are checked too
        model(torch.randn(2, 2, *SIZES[dims][0]))
    model.eval()
    saved = model.save_pretrained(tmp_path / "m")
    files = sorted(p.name for p in saved.iterdir())
    assert files == ["config.json", "model.safetensors"]
    assert not [p for p in saved.rglob("*") if p.suffix in {".pt", ".pth", ".bin", ".pkl", ".tmp"}]
    config = json.loads((saved / "config.json").read_text())
    assert config["format_version"] == CHECKPOINT_FORMAT_VERSION == 1
    assert config["name"] == name

    def no_unpickling(*args, **kwargs):
        raise AssertionError("load_model must not unpickle")

    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    monkeypatch.setattr(torch, "load", no_unpickling)
    loaded = unetkit.load_model(saved).eval()
    assert type(loaded) is type(model)
    state, state2 = model.state_dict(), loaded.state_dict()
    assert state.keys() == state2.keys()
    for key in state:
        assert torch.equal(state[key], state2[key]), key
    x = torch.randn(1, 2, *SIZES[dims][0])
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_newer_format_version_is_refused(tmp_path):
    saved = _tiny("unet").save_pretrained(tmp_path / "m")
    config = json.loads((saved / "config.json").read_text())
    config["format_version"] = CHECKPOINT_FORMAT_VERSION + 1
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="format version 2 is newer"):
        unetkit.load_model(saved)


def test_missing_weights_file_is_a_clear_error(tmp_path):
    saved = _tiny("unet").save_pretrained(tmp_path / "m")
    (saved / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        unetkit.load_model(saved)


def test_classic_unet_parameter_count():
    model = unetkit.create_model(
        "unet", width=64, depth=4, norm="none", upsampling="transposed", in_channels=1, classes=2
    )
    # Hand count: 3x3 convs with bias (no norm), 2x2 transposed convs, 1x1 head.
    widths = [64, 128, 256, 512, 1024]
    expected = _conv_params(1, 64, 3) + _conv_params(64, 64, 3)
    for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
        expected += _conv_params(c_in, c_out, 3) + _conv_params(c_out, c_out, 3)  # encoder stage
        expected += _conv_params(c_out, c_in, 2)  # transposed up-conv c_out -> c_in
        expected += _conv_params(2 * c_in, c_in, 3) + _conv_params(c_in, c_in, 3)  # decoder block
    expected += _conv_params(64, 2, 1)
    assert expected == 31_030_658
    assert sum(p.numel() for p in model.parameters()) == expected


@pytest.mark.parametrize("name", SEG_MODELS)
def test_bad_input_names_the_expected_layout(name):
    model = _tiny(name).eval()
    with pytest.raises(ValueError, match=r"2 input channel\(s\); got 3"):
        model(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        model(torch.zeros(2, 16, 16))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        model(torch.zeros(1, 2, 8, 16, 16))
    if 3 in supported_spatial_dims(name):
        with pytest.raises(ValueError, match=r"\(N, C, D, H, W\)"):
            _tiny(name, dims=3)(torch.zeros(1, 2, 16, 16))


def test_unknown_names_list_the_choices():
    with pytest.raises(KeyError, match="registered models: .*unet"):
        unetkit.create_model("unet_nope")
    with pytest.raises(ValueError, match="unknown encoder 'nope'.*plain.*resnet34"):
        unetkit.create_model("unet", encoder="nope")
    with pytest.raises(ValueError, match="unknown norm 'layer'; choose one of batch, instance, group, none"):
        unetkit.create_model("unet", norm="layer")
    with pytest.raises(ValueError, match="unknown activation 'tanh'; choose one of relu, "):
        unetkit.create_model("unet", act="tanh")
    with pytest.raises(
        ValueError, match="unknown upsampling 'pixelshuffle'; choose one of transposed, interpolate"
    ):
        unetkit.create_model("unet", upsampling="pixelshuffle")
    with pytest.raises(ValueError, match="ds_eval"):
        unetkit.create_model("unetplusplus", deep_supervision=True, ds_eval="median")


@pytest.mark.parametrize("ds_eval", ["final", "mean"])
def test_unetplusplus_deep_supervision(ds_eval):
    # instance norm and no dropout: train and eval compute the same function, so outputs are comparable
    model = _tiny("unetplusplus", norm="instance", deep_supervision=True, ds_eval=ds_eval)
    x = torch.randn(2, 2, 97, 131)
    with torch.no_grad():
        heads = model.train()(x)
        single = model.eval()(x)
    assert isinstance(heads, list) and len(heads) == TINY["depth"]
    assert all(h.shape == (2, 3, 97, 131) for h in heads)
    assert not torch.equal(heads[0], heads[-1])  # distinct heads, not one tensor repeated
    assert isinstance(single, torch.Tensor) and single.shape == (2, 3, 97, 131)
    expected = heads[0] if ds_eval == "final" else (sum(heads) / len(heads))
    torch.testing.assert_close(single, expected, rtol=0, atol=1e-6)
    # the final head is exactly what the same weights give without deep supervision
    plain = _tiny("unetplusplus", norm="instance")
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(x), heads[0], rtol=0, atol=1e-6)


@pytest.mark.parametrize("dims", [2, 3])
def test_attention_maps_are_probabilities_per_level(dims):
    model = _tiny("attention_unet", dims=dims).eval()
    size = SIZES[dims][0]
    with torch.no_grad():
        model(torch.randn(2, 2, *size))
    maps = model.attention_maps()
    assert len(maps) == TINY["depth"]
    padded = [-(-s // 8) * 8 for s in size]  # inputs are padded to the output stride 2**depth
    for level, alpha in enumerate(maps):
        assert alpha.shape == (2, 1, *[p // 2**level for p in padded])
        assert alpha.min() >= 0 and alpha.max() <= 1
        assert alpha.std() > 0


def test_freeze_encoder_stops_gradients_and_bn_statistics():
    model = _tiny("unet", norm="batch")
    encoder_stats = {k: v.clone() for k, v in model.encoder.state_dict().items() if "running" in k}
    assert encoder_stats
    model.freeze_encoder()
    model.train()
    assert not model.encoder.training and model.decoder.training
    out = model(torch.randn(2, 2, 32, 32) * 3 + 1)
    out.mean().backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert all(p.grad is not None for p in model.decoder.parameters())
    for k, v in model.encoder.state_dict().items():
        if k in encoder_stats:
            assert torch.equal(v, encoder_stats[k]), k

    model.unfreeze_encoder()
    assert model.encoder.training
    assert all(p.requires_grad for p in model.encoder.parameters())
    model(torch.randn(2, 2, 32, 32) * 3 + 1).mean().backward()
    assert _first_encoder_conv(model).weight.grad.abs().sum() > 0
    changed = [
        k
        for k, v in model.encoder.state_dict().items()
        if k in encoder_stats and not torch.equal(v, encoder_stats[k])
    ]
    assert changed


# -- timm encoders (output stride 32, first feature at reduction 2) -------------------------------
@pytest.mark.parametrize("name", SEG_MODELS)
@pytest.mark.parametrize("in_channels", [1, 4])
def test_timm_encoder_variant(name, in_channels):
    pytest.importorskip("timm")
    torch.manual_seed(0)
    model = unetkit.create_model(name, encoder="resnet18", in_channels=in_channels, classes=3).train()
    assert model.encoder.output_stride == 32
    out = model(torch.randn(1, in_channels, 97, 131))
    assert out.shape == (1, 3, 97, 131)
    out.square().mean().backward()
    conv = _first_encoder_conv(model)
    assert conv.in_channels == in_channels
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
