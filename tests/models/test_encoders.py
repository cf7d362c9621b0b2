"""Encoder registry, timm adapter and weight loading."""

from __future__ import annotations

import functools
import pickle

import pytest
import timm
import torch
from safetensors.torch import save_file

from unetkit.models.encoders import create_encoder, list_encoders, resolve_encoder
from unetkit.models.encoders.timm_encoder import TimmEncoder, adapt_input_conv_weight
from unetkit.models.encoders.weights import WeightsDownloadError, load_encoder_weights

# Stage widths and strides of each tested backbone, from the architectures' papers / definitions.
EXPECTED = {
    "resnet18": ([64, 64, 128, 256, 512], [2, 4, 8, 16, 32]),
    "resnet34": ([64, 64, 128, 256, 512], [2, 4, 8, 16, 32]),
    "resnet50": ([64, 256, 512, 1024, 2048], [2, 4, 8, 16, 32]),
    "efficientnet_b0": ([16, 24, 40, 112, 320], [2, 4, 8, 16, 32]),
    "efficientnet_lite0": ([16, 24, 40, 112, 320], [2, 4, 8, 16, 32]),
    "tf_efficientnet_lite0": ([16, 24, 40, 112, 320], [2, 4, 8, 16, 32]),
    "mobilenetv3_large_100": ([16, 24, 40, 112, 960], [2, 4, 8, 16, 32]),
    "convnext_tiny": ([96, 192, 384, 768], [4, 8, 16, 32]),
    "regnety_004": ([32, 48, 104, 208, 440], [2, 4, 8, 16, 32]),
    "plain": ([32, 64, 128, 256, 512], [1, 2, 4, 8, 16]),
}
# Large backbones take several seconds just to initialise on a busy 2-core machine.
SLOW = {"resnet50", "convnext_tiny", "resnet34"}


def _params(names):
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in names]


def test_list_encoders_is_plain_plus_tested_timm_names():
    names = list_encoders()
    assert names[0] == "plain"
    assert set(names) == set(EXPECTED)
    assert all(timm.is_model(n) for n in names[1:])


@pytest.mark.parametrize("name", _params(list_encoders()))
def test_listed_encoder_features_match_declared_channels_and_reductions(name):
    torch.manual_seed(0)
    encoder = create_encoder(name, in_channels=3, spatial_dims=2).eval()
    channels, reductions = EXPECTED[name]
    assert encoder.out_channels == channels
    assert encoder.reductions == reductions
    assert encoder.output_stride == max(reductions)
    with torch.no_grad():
        features = encoder(torch.randn(2, 3, 64, 64))
    assert [tuple(f.shape) for f in features] == [
        (2, c, 64 // r, 64 // r) for c, r in zip(channels, reductions, strict=True)
    ]


@pytest.mark.parametrize("in_channels", [1, 4])
def test_timm_encoder_other_channel_counts(in_channels):
    encoder = create_encoder("resnet18", in_channels=in_channels).eval()
    assert encoder.model.conv1.weight.shape == (64, in_channels, 7, 7)
    with torch.no_grad():
        features = encoder(torch.randn(1, in_channels, 64, 64))
    assert [f.shape[1] for f in features] == [64, 64, 128, 256, 512]
    with pytest.raises(ValueError, match=rf"\(N, {in_channels}, H, W\)"):
        encoder(torch.randn(1, 3, 64, 64))


def test_name_prefixes_and_any_timm_name():
    assert resolve_encoder("tu-resnet18") == ("timm", "resnet18")
    assert resolve_encoder("timm-efficientnet_b0") == ("timm", "efficientnet_b0")
    assert resolve_encoder("resnet26d") == ("timm", "resnet26d")  # not listed, but timm knows it
    assert resolve_encoder("plain") == ("plain", "plain")
    encoder = create_encoder("tu-resnet18", in_channels=3, depth=3)
    assert isinstance(encoder, TimmEncoder) and encoder.reductions == [2, 4, 8]


def test_unknown_encoder_lists_valid_names():
    with pytest.raises(ValueError) as info:
        create_encoder("resnet_does_not_exist", in_channels=3)
    message = str(info.value)
    assert "resnet_does_not_exist" in message
    for name in list_encoders():
        assert name in message


def test_timm_encoder_rejects_3d_and_bad_depth():
    with pytest.raises(ValueError, match="2D only"):
        create_encoder("resnet18", in_channels=1, spatial_dims=3)
    with pytest.raises(ValueError, match="4 feature stages; depth must be 1..4, got 5"):
        TimmEncoder(name="convnext_tiny", depth=5)


def test_plain_encoder_through_registry_2d_and_3d():
    encoder = create_encoder("plain", in_channels=2, spatial_dims=3, widths=[4, 8, 16], norm="instance")
    assert encoder.out_channels == [4, 8, 16] and encoder.reductions == [1, 2, 4]
    features = encoder(torch.randn(1, 2, 8, 8, 8))
    assert [tuple(f.shape) for f in features] == [(1, 4, 8, 8, 8), (1, 8, 4, 4, 4), (1, 16, 2, 2, 2)]
    assert create_encoder("plain", in_channels=1, depth=2).out_channels == [32, 64, 128]
    with pytest.raises(ValueError, match="depth=3"):
        create_encoder("plain", in_channels=1, depth=3, widths=[4, 8])
    with pytest.raises(ValueError, match="unknown encoder option"):
        create_encoder("plain", in_channels=1, widht=[4, 8])


# -- stem adaptation ----------------------------------------------------------------------------


def test_adapt_input_conv_weight_by_hand():
    weight = torch.arange(2 * 3 * 1 * 1, dtype=torch.float32).reshape(2, 3, 1, 1)  # [[0,1,2],[3,4,5]]
    assert adapt_input_conv_weight(weight, 1).flatten().tolist() == [3.0, 12.0]
    four = adapt_input_conv_weight(weight, 4)[:, :, 0, 0]
    assert four.tolist() == [[0.0, 0.75, 1.5, 0.0], [2.25, 3.0, 3.75, 2.25]]
    assert torch.equal(adapt_input_conv_weight(weight, 3), weight)
    with pytest.raises(ValueError, match="RGB conv kernel"):
        adapt_input_conv_weight(weight[:, :2], 1)


@functools.cache
def _cached_rgb_classifier_state():
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False)
    # Non-trivial batch-norm statistics, so that a missed buffer would show.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return {k: v.detach() for k, v in model.state_dict().items()}


def _rgb_classifier_state():
    """A random-init resnet18 classifier state dict (a fresh copy each call)."""
    return {k: v.clone() for k, v in _cached_rgb_classifier_state().items()}


def test_one_channel_stem_is_sum_of_rgb_kernels_and_grey_equals_rgb(tmp_path):
    state = _rgb_classifier_state()
    path = tmp_path / "resnet18.safetensors"
    save_file(state, str(path))
    grey = create_encoder("resnet18", in_channels=1, weights=str(path)).eval()
    rgb = create_encoder("resnet18", in_channels=3, weights=str(path)).eval()
    torch.testing.assert_close(grey.model.conv1.weight, state["conv1.weight"].sum(dim=1, keepdim=True))
    torch.testing.assert_close(grey.model.layer3[1].bn2.running_var, state["layer3.1.bn2.running_var"])
    # A grey image through the 1-channel stem is the RGB network on (g, g, g).
    image = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        for a, b in zip(grey(image), rgb(image.expand(1, 3, 64, 64)), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_four_channel_stem_repeats_rgb_scaled(tmp_path):
    state = _rgb_classifier_state()
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    encoder = create_encoder("resnet18", in_channels=4)
    report = load_encoder_weights(encoder, path)
    w = state["conv1.weight"]
    expected = torch.cat([w, w[:, :1]], dim=1) * 0.75
    torch.testing.assert_close(encoder.model.conv1.weight, expected)
    assert report.adapted_stem and report.loaded == len(state) - 2
    assert sorted(report.ignored) == ["fc.bias", "fc.weight"]


# -- file formats -------------------------------------------------------------------------------


def _assert_loaded(encoder, state):
    for key, value in encoder.model.state_dict().items():
        torch.testing.assert_close(value, state[key], msg=key)


def test_safetensors_and_pth_load_the_same(tmp_path):
    state = _rgb_classifier_state()
    save_file(state, str(tmp_path / "w.safetensors"))
    torch.save(state, tmp_path / "w.pth")
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}, "epoch": 3}, tmp_path / "w.bin")
    encoder = create_encoder("resnet18", in_channels=3)
    for name in ("w.safetensors", "w.pth", "w.bin"):
        with torch.no_grad():
            for tensor in encoder.state_dict().values():
                tensor.zero_()
        load_encoder_weights(encoder, str(tmp_path / name))
        _assert_loaded(encoder, state)


def test_encoder_state_dict_round_trips_and_depth_drops_late_stages(tmp_path):
    state = _rgb_classifier_state()
    source = create_encoder("resnet18", in_channels=3)
    load_encoder_weights(source, _save(tmp_path / "full.safetensors", state))
    # A saved encoder (keys "model.conv1.weight", ...) loads back.
    copy = create_encoder("resnet18", in_channels=3)
    load_encoder_weights(copy, _save(tmp_path / "encoder.safetensors", source.state_dict()))
    _assert_loaded(copy, state)
    shallow = create_encoder("resnet18", in_channels=3, depth=2)
    report = load_encoder_weights(shallow, tmp_path / "full.safetensors")
    assert any(k.startswith("layer4.") for k in report.ignored)
    _assert_loaded(shallow, state)


def test_flattened_sequential_stem_keys_map(tmp_path):
    # ConvNeXt's feature wrapper renames stem.0 -> stem_0; a classifier checkpoint must still fit.
    torch.manual_seed(1)
    state = timm.create_model("convnext_atto", pretrained=False).state_dict()
    encoder = create_encoder(
        "convnext_atto", in_channels=1, weights=str(_save(tmp_path / "c.safetensors", state))
    )
    assert encoder.stem_weight_key == "stem_0.weight"
    torch.testing.assert_close(encoder.model.stem_0.weight, state["stem.0.weight"].sum(1, keepdim=True))
    torch.testing.assert_close(
        encoder.model.stages_3.blocks[1].mlp.fc2.weight, state["stages.3.blocks.1.mlp.fc2.weight"]
    )


def _save(path, state):
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def test_wrong_keys_are_listed(tmp_path):
    state = _rgb_classifier_state()
    state["layer1.0.convX.weight"] = state.pop("layer1.0.conv1.weight")
    del state["layer2.1.bn1.running_mean"]
    state["extra.thing"] = torch.zeros(3)
    encoder = create_encoder("resnet18", in_channels=3)
    with pytest.raises(ValueError) as info:
        load_encoder_weights(encoder, _save(tmp_path / "bad.safetensors", state))
    message = str(info.value)
    assert "2 missing: layer1.0.conv1.weight, layer2.1.bn1.running_mean" in message
    # (safetensors stores keys sorted)
    assert "2 unexpected: extra.thing, layer1.0.convX.weight" in message


def test_many_missing_keys_are_counted_and_truncated(tmp_path):
    state = _rgb_classifier_state()
    kept = {k: v for k, v in state.items() if not k.startswith("layer4.")}
    with pytest.raises(ValueError, match=r"\d+ missing \(first 10\): layer4\.0\.conv1\.weight"):
        load_encoder_weights(
            create_encoder("resnet18", in_channels=3), _save(tmp_path / "x.safetensors", kept)
        )


def test_shape_mismatch_is_named(tmp_path):
    state = _rgb_classifier_state()
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 5, 5)
    with pytest.raises(
        ValueError, match=r"layer1\.0\.conv1\.weight: file \(64, 64, 5, 5\) vs encoder \(64, 64, 3, 3\)"
    ):
        load_encoder_weights(
            create_encoder("resnet18", in_channels=3), _save(tmp_path / "s.safetensors", state)
        )


class _Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickle_with_objects_is_refused_not_executed(tmp_path):
    marker = tmp_path / "pwned.txt"
    state = _rgb_classifier_state()
    state["payload"] = _Payload(marker)
    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump(state, f)
    torch.save({**_rgb_classifier_state(), "payload": _Payload(marker)}, tmp_path / "evil2.pt")
    for name in ("evil.pth", "evil2.pt"):
        with pytest.raises(ValueError, match="refused to load"):
            load_encoder_weights(create_encoder("resnet18", in_channels=3), tmp_path / name)
    assert not marker.exists()


def test_bad_files(tmp_path):
    encoder = create_encoder("resnet18", in_channels=3)
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_encoder_weights(encoder, tmp_path / "nope.safetensors")
    (tmp_path / "w.npz").write_bytes(b"x")
    with pytest.raises(ValueError, match="unsupported weights file type '.npz'"):
        load_encoder_weights(encoder, tmp_path / "w.npz")
    (tmp_path / "w.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="unreadable safetensors"):
        load_encoder_weights(encoder, tmp_path / "w.safetensors")
    torch.save({"conv1.weight": torch.zeros(1), "epoch": 3}, tmp_path / "mixed.pt")
    with pytest.raises(ValueError, match="1 entries are not tensors"):
        load_encoder_weights(encoder, tmp_path / "mixed.pt")


# -- named sources ------------------------------------------------------------------------------


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    # This machine has no network; offline mode makes huggingface_hub fail at once instead of
    # retrying for ~30 s, and an empty cache makes sure nothing cached is found.
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))


@pytest.mark.parametrize("source", ["timm:resnet18.a1_in1k", "timm:resnet18", "hf-hub:timm/resnet18.a1_in1k"])
def test_hub_name_offline_gives_clear_error(offline_hub, source):
    encoder = create_encoder("resnet18", in_channels=3)
    with pytest.raises(WeightsDownloadError) as info:
        load_encoder_weights(encoder, source)
    message = str(info.value)
    assert source in message and "needs internet access" in message and "pass that file's path" in message
    assert isinstance(info.value, ConnectionError)


def test_hub_names_are_checked_before_downloading():
    encoder = create_encoder("resnet18", in_channels=3)
    with pytest.raises(ValueError, match="unknown pretrained tag 'nope'; available: .*resnet18.a1_in1k"):
        load_encoder_weights(encoder, "timm:resnet18.nope")
    with pytest.raises(ValueError, match="holds 'resnet34' weights but the encoder is 'resnet18'"):
        load_encoder_weights(encoder, "timm:resnet34.a1_in1k")
    with pytest.raises(ValueError, match="bundled only for 'tf_efficientnet_lite0'"):
        load_encoder_weights(encoder, "imagenet")


def test_input_skip_joins_the_image_at_full_resolution(tmp_path):
    """A strided backbone (reduction 2 first) with ``input_skip``: the last stage's first conv reads the
    upsampled features plus the image's channels, and a pixel-sized change of the input reaches the
    output at that pixel through the skip even when the backbone is zeroed out."""
    import torch

    from unetkit.models.base import load_model, save_pretrained
    from unetkit.models.factory import create_model

    torch.manual_seed(0)
    plain = create_model("unet", in_channels=3, classes=2, encoder="tf_efficientnet_lite0")
    skip = create_model("unet", in_channels=3, classes=2, encoder="tf_efficientnet_lite0", input_skip=True)
    c_out = plain.final_up[1][0].out_channels
    assert plain.final_up[1][0].in_channels == c_out
    assert skip.final_up[1][0].in_channels == c_out + 3
    extra = sum(p.numel() for p in skip.parameters()) - sum(p.numel() for p in plain.parameters())
    assert extra == 3 * c_out * 3 * 3  # only the first conv of the last block grows

    skip.eval()
    with torch.no_grad():
        for p in skip.encoder.parameters():
            p.zero_()
        x = torch.zeros(1, 3, 45, 61)  # any size: padded and cropped inside
        base = skip(x)
        x[0, :, 20, 30] = 5.0
        diff = (skip(x) - base).abs().sum(1)[0]
    assert diff[20, 30] > 0 and diff[0, 0] == 0  # local effect, only through the full-resolution skip

    save_pretrained(skip, tmp_path / "m")
    again = load_model(tmp_path / "m").eval()
    with torch.no_grad():
        assert torch.equal(again(x), skip(x))


def test_configs_written_before_input_skip_load_without_it(tmp_path):
    import json

    import torch

    from unetkit.models.base import load_model, save_pretrained
    from unetkit.models.factory import create_model

    model = create_model("unet", in_channels=1, classes=2, encoder="tf_efficientnet_lite0")
    save_pretrained(model, tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    del config["kwargs"]["input_skip"]  # as written before the field existed
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    loaded = load_model(tmp_path / "m")
    assert loaded.final_up[1][0].in_channels == model.final_up[1][0].in_channels
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), model.eval()(x))
