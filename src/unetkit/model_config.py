"""The typed configuration of each built-in segmentation model: one place for its options and their defaults.

A plan's ``model.kwargs`` are these dataclasses' fields (``create_model(name, **kwargs)`` builds the model from
them); :meth:`unetkit.config.ModelConfig.typed` checks a plan's keyword arguments against them (unknown option,
wrong type) without importing torch, so ``unetkit train --set model.kwargs.widht=8`` fails before any data is
read, naming the option. ``unetkit.models`` builds its networks from the same classes
(``SegmentationModel.config_class``). This module imports nothing from unetkit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SegModelConfig:
    """Options shared by the U-Net family.

    Attributes:
        in_channels: image channels.
        classes: output channels (logits). Binary tasks may use 1 (sigmoid) or 2 (softmax).
        spatial_dims: 2 (images) or 3 (volumes; built-in encoder only).
        encoder: ``plain`` (built-in) or any timm backbone name (see ``unetkit.list_encoders()``).
        encoder_weights: local file (safetensors / state dict) or hub name for the encoder, or None.
        depth: number of downsamplings of the plain encoder (timm encoders use their 5 stages).
        width: channels of the first plain stage; doubled per stage (``widths`` overrides).
        widths: explicit channels per plain stage (``depth + 1`` entries).
        max_width: cap on doubled widths (nnU-Net style), or None.
        decoder_channels: channels per decoder level, shallowest first; default mirrors the encoder.
        norm: ``batch`` | ``instance`` | ``group`` | ``none``.
        act: ``relu`` | ``leaky_relu`` | ``gelu`` | ``silu`` | ``elu``.
        upsampling: ``transposed`` | ``interpolate`` (bilinear / trilinear + 1x1 conv).
        dropout: dropout after the first conv of the bottleneck block (and decoder blocks).
        input_skip: backbones whose shallowest feature is strided (timm: reduction 2) have no skip at full
            resolution; with ``input_skip`` the image itself joins the last upsampling stage there, which is
            what thin structures (membranes, vessels, cracks) need to keep sharp boundaries.
        extra: free-form entries kept with the config (saved and reloaded; no built-in model reads them).
    """

    in_channels: int = 1
    classes: int = 2
    spatial_dims: int = 2
    encoder: str = "plain"
    encoder_weights: str | None = None
    depth: int = 4
    width: int = 32
    widths: list[int] | None = None
    max_width: int | None = None
    decoder_channels: list[int] | None = None
    norm: str = "batch"
    act: str = "relu"
    upsampling: str = "transposed"
    dropout: float = 0.0
    input_skip: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def encoder_widths(self) -> list[int]:
        if self.widths is not None:
            return list(self.widths)
        widths = [self.width * 2**i for i in range(self.depth + 1)]
        return [min(w, self.max_width) for w in widths] if self.max_width else widths


@dataclass
class UNetPlusPlusConfig(SegModelConfig):
    """Adds deep supervision.

    Attributes:
        deep_supervision: one head per nested output ``X[0][1..L]``. In training the model returns the
            list of all heads' logits, final head first (feed it to ``losses.DeepSupervisionLoss``).
        ds_eval: in eval mode with deep supervision: ``final`` returns the last head's logits,
            ``mean`` the mean of all heads' logits.
    """

    deep_supervision: bool = False
    ds_eval: str = "final"


# Registered name -> config class, for the built-in models (tests/models check it against the registry).
MODEL_CONFIGS: dict[str, type[SegModelConfig]] = {
    "unet": SegModelConfig,
    "attention_unet": SegModelConfig,
    "unetplusplus": UNetPlusPlusConfig,
}


def untyped_option(kwargs: Mapping[str, Any], name: str, default: Any) -> Any:
    """An option of a model without a typed config (the diffusion U-Net, a user's own registered model).

    The built-in models' options are read through their dataclasses (``ModelConfig.typed()``); a model
    outside :data:`MODEL_CONFIGS` has only its keyword arguments, and this is the one place that reads them.

    Args:
        kwargs: the plan's ``model.kwargs``.
        name: the option (``in_channels``, ``classes``, ``encoder``).
        default: the value when the keyword arguments do not name it.

    Returns:
        The option's value, or ``default``.
    """
    return kwargs.get(name, default)


__all__ = ["MODEL_CONFIGS", "SegModelConfig", "UNetPlusPlusConfig", "untyped_option"]
