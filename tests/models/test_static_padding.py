"""Fixed "same" pads for export: the replaced layers equal timm's dynamic ones wherever the models use them."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from timm.layers.conv2d_same import Conv2dSame
from timm.layers.padding import get_same_padding
from timm.layers.pool2d_same import AvgPool2dSame, MaxPool2dSame
from timm.layers.std_conv import StdConv2dSame

import unetkit
from unetkit.models.static_padding import (
    FixedPad,
    _static_equivalent,
    same_pad_for_divisible_size,
    with_static_same_padding,
)


@pytest.fixture(scope="module")
def lite0() -> nn.Module:
    """The planner's default network (random weights), with non-trivial batch-norm statistics."""
    torch.manual_seed(0)
    model = unetkit.create_model("unet", in_channels=1, classes=2, encoder="tf_efficientnet_lite0", norm="batch")
    with torch.no_grad():
        model.train()(torch.randn(2, 1, 64, 64) * 2 + 0.5)
    return model.eval()


def test_pads_by_hand_and_against_timm_for_sizes_the_stride_divides() -> None:
    # k=3, s=2: total (3-1)+1-2 = 1, the extra pixel right/bottom; k=5, s=2: total 3 -> (1, 2).
    assert same_pad_for_divisible_size((3, 3), (2, 2), (1, 1)) == (0, 1, 0, 1)
    assert same_pad_for_divisible_size((5, 3), (2, 2), (1, 1)) == (0, 1, 1, 2)
    assert same_pad_for_divisible_size((3, 3), (1, 1), (2, 2)) == (2, 2, 2, 2)  # dilated: (3-1)*2+1-1 = 4
    assert same_pad_for_divisible_size((2, 2), (2, 2), (1, 1)) == (0, 0, 0, 0)  # a 2x2/2 pool needs none
    for k, s, d in [(3, 2, 1), (5, 2, 1), (3, 1, 2), (7, 4, 1), (2, 2, 1), (1, 2, 1)]:
        expected = {get_same_padding(i, k, s, d) for i in range(s, 20 * s, s)}  # timm's own formula
        (left, right, _, _) = same_pad_for_divisible_size((k, k), (s, s), (d, d))
        assert expected == {left + right}, (k, s, d)


def test_lite0_with_fixed_pads_equals_the_original_exactly_at_any_size(lite0: nn.Module) -> None:
    fixed, count = with_static_same_padding(lite0)
    # Lite0's dynamic layers: the stride-2 stem and the four strided depthwise convolutions.
    assert count == 5 == sum(isinstance(m, FixedPad) for m in fixed.modules())
    assert not any(isinstance(m, Conv2dSame) for m in fixed.modules())
    assert sum(isinstance(m, Conv2dSame) for m in lite0.modules()) == 5  # the original is untouched
    generator = torch.Generator().manual_seed(1)
    # multiples of the stride 32, and sizes the model pads internally (odd, tiny, one off a multiple)
    for shape in [(1, 1, 64, 64), (2, 1, 96, 160), (1, 1, 97, 131), (1, 1, 33, 45), (1, 1, 1, 1), (1, 1, 255, 257)]:
        x = torch.randn(shape, generator=generator) * 3
        with torch.no_grad():
            assert torch.equal(fixed(x), lite0(x)), shape


@pytest.mark.parametrize("stride", [1, 2])
def test_each_kind_of_dynamic_layer_is_replaced_exactly(stride: int) -> None:
    torch.manual_seed(2)
    layers = [
        Conv2dSame(3, 4, 5, stride=stride, dilation=1 if stride == 2 else 2, groups=1),
        Conv2dSame(4, 4, 3, stride=stride, groups=4, bias=False),
        StdConv2dSame(3, 4, 3, stride=2),  # dynamic only when strided
        MaxPool2dSame(3, stride=2),
        AvgPool2dSame(3, stride=2),
    ]
    for layer in layers:
        channels = 4 if getattr(layer, "groups", 1) == 4 else 3
        x = torch.randn(2, channels, 24, 40) - 0.5  # negative values: a zero pad would change the max pool
        with torch.no_grad():
            expected = layer(x)
            got = _static_equivalent(layer)(x)
        assert torch.equal(got, expected), layer


def test_models_without_dynamic_layers_and_layers_outside_an_encoder_are_left_alone() -> None:
    plain = unetkit.create_model("unet", in_channels=1, classes=2, depth=2, width=4)
    assert with_static_same_padding(plain) == (plain, 0)
    # Outside a segmentation model nothing pads the input to a multiple of the stride: fixed pads could be wrong.
    bare = nn.Sequential(Conv2dSame(1, 1, 3, stride=2))
    assert with_static_same_padding(bare) == (bare, 0)
