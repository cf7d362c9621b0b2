"""TensorFlow-style "same" padding with fixed pad amounts, for graph export.

timm builds strided convolutions and poolings with ``padding="same"`` (``tf_efficientnet_lite0``: the stem and
the strided depthwise convolutions) as ``Conv2dSame`` / ``MaxPool2dSame`` / ``AvgPool2dSame``, which compute
their pads from the input size at every call. Under ``torch.export`` with dynamic height and width that
arithmetic (``ceil(i / s)``, ``max(..., 0)``) on symbolic sizes sends the exporter's shape reasoning into
minutes of work.

The segmentation models pad every input to a multiple of the encoder's output stride, so each such layer
sees a size ``i`` that its stride ``s`` divides. Then the total "same" pad along that axis,
``max((ceil(i/s) - 1) * s + (k - 1) * d + 1 - i, 0)``, is ``max((k - 1) * d + 1 - s, 0)``: a constant.
:func:`with_static_same_padding` swaps each dynamic layer for a fixed pad (smaller half first, as
TensorFlow) followed by the same operation without padding: numerically identical under that condition.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


class FixedPad(nn.Module):
    """``F.pad(x, pad, value=value)`` followed by ``op`` (a convolution or pooling with zero padding).

    Args:
        pad: ``(left, right, top, bottom)``, as :func:`torch.nn.functional.pad` takes them.
        value: the pad value (0 for convolutions and average pooling, ``-inf`` for max pooling).
        op: the layer that runs on the padded input.
    """

    def __init__(self, pad: Sequence[int], value: float, op: nn.Module) -> None:
        super().__init__()
        self.pad = tuple(int(p) for p in pad)
        self.value = float(value)
        self.op = op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(F.pad(x, self.pad, value=self.value))


def same_pad_for_divisible_size(
    kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int]
) -> tuple[int, int, int, int]:
    """The "same" pads ``(left, right, top, bottom)`` of a 2D layer whose input sizes its stride divides.

    Per axis the total is ``max((k - 1) * d + 1 - s, 0)``, split as TensorFlow does (the extra pixel goes
    right / bottom). ``kernel``, ``stride`` and ``dilation`` are ``(height, width)`` pairs.
    """
    pad_h, pad_w = (max((k - 1) * d + 1 - s, 0) for k, s, d in zip(kernel, stride, dilation, strict=True))
    return (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)


def with_static_same_padding(model: nn.Module) -> tuple[nn.Module, int]:
    """``model`` with fixed pads in every dynamic "same" layer of timm inside a segmentation model's encoder.

    Only encoders of :class:`~unetkit.models.base.SegmentationModel` (``model`` itself or any submodule, e.g.
    a wrapper that adds a softmax) are changed: the model pads their input to a multiple of the encoder's
    output stride, the product of its strides, so every strided layer inside sees sizes its stride divides.

    Returns:
        ``(copy, count)``: a deep copy with ``count`` layers replaced (``model`` is not changed), or
        ``(model, 0)`` itself when it has no such layer.
    """
    from unetkit.models.base import SegmentationModel

    def targets(root: nn.Module) -> list[nn.Module]:
        encoders = [m.encoder for m in root.modules() if isinstance(m, SegmentationModel)]
        return [m for e in encoders for m in e.modules() if _is_dynamic_same(m)]

    if not targets(model):
        return model, 0
    clone = copy.deepcopy(model)
    wanted = {id(m) for m in targets(clone)}
    replaced = 0
    for parent in list(clone.modules()):
        for name, child in list(parent.named_children()):
            if id(child) in wanted:
                setattr(parent, name, _static_equivalent(child))
                replaced += 1
    return clone, replaced


def _dynamic_same_types() -> tuple[type[nn.Module], ...]:
    from timm.layers.conv2d_same import Conv2dSame
    from timm.layers.pool2d_same import AvgPool2dSame, MaxPool2dSame

    return (Conv2dSame, MaxPool2dSame, AvgPool2dSame)


def _is_standardised_same(module: nn.Module) -> bool:
    from timm.layers.std_conv import ScaledStdConv2dSame, StdConv2dSame

    return isinstance(module, (StdConv2dSame, ScaledStdConv2dSame)) and bool(module.same_pad)


def _is_dynamic_same(module: nn.Module) -> bool:
    """True for a timm layer that computes its "same" pads from the input size at every call."""
    return isinstance(module, _dynamic_same_types()) or _is_standardised_same(module)


def _static_equivalent(module: nn.Module) -> nn.Module:
    """The fixed-pad replacement of one layer for which :func:`_is_dynamic_same` holds."""
    from timm.layers.conv2d_same import Conv2dSame
    from timm.layers.pool2d_same import AvgPool2dSame, MaxPool2dSame
    from timm.layers.std_conv import ScaledStdConv2dSame, StdConv2dSame

    if isinstance(module, (StdConv2dSame, ScaledStdConv2dSame)) and module.same_pad:
        pads = _same_pads(module.kernel_size, module.stride, module.dilation)
        module.same_pad = False  # its own padding is 0 when "same" is dynamic; it standardises as before
        return FixedPad(pads, 0.0, module)
    if isinstance(module, Conv2dSame):
        conv = nn.Conv2d(module.in_channels, module.out_channels, _pair(module.kernel_size),
                         stride=_pair(module.stride), padding=0, dilation=_pair(module.dilation),
                         groups=module.groups, bias=module.bias is not None)  # fmt: skip
        conv.weight = module.weight  # the same Parameter objects: no copy, no drift
        conv.bias = module.bias
        return FixedPad(_same_pads(module.kernel_size, module.stride, module.dilation), 0.0, conv)
    if isinstance(module, MaxPool2dSame):
        pool = nn.MaxPool2d(module.kernel_size, module.stride, 0, module.dilation, ceil_mode=module.ceil_mode)
        return FixedPad(_same_pads(module.kernel_size, module.stride, module.dilation), float("-inf"), pool)
    if isinstance(module, AvgPool2dSame):
        avg = nn.AvgPool2d(module.kernel_size, module.stride, 0, ceil_mode=module.ceil_mode,
                           count_include_pad=module.count_include_pad)  # fmt: skip
        return FixedPad(_same_pads(module.kernel_size, module.stride, (1, 1)), 0.0, avg)  # pooling: no dilation
    raise TypeError(f"{type(module).__name__} is not a dynamic 'same' layer of timm")


def _same_pads(
    kernel: int | Sequence[int], stride: int | Sequence[int] | None, dilation: int | Sequence[int]
) -> tuple[int, int, int, int]:
    if stride is None:  # torch's pooling default: the kernel size (timm's "same" pools always set it)
        stride = kernel
    return same_pad_for_divisible_size(_pair(kernel), _pair(stride), _pair(dilation))


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    """A layer's ``(height, width)`` size; an int means both, as torch reads it."""
    if isinstance(value, int):
        return (value, value)
    if len(value) != 2:
        raise ValueError(f"expected a 2D (height, width) size, got {tuple(value)}")
    return (int(value[0]), int(value[1]))


__all__ = ["FixedPad", "same_pad_for_divisible_size", "with_static_same_padding"]
