"""Classic U-Net (Ronneberger et al. 2015) and Attention U-Net (Oktay et al. 2018)."""

from __future__ import annotations

import torch
import torch.nn as nn

from unetkit.models.base import SegmentationModel, SegModelConfig
from unetkit.models.decoders import UNetDecoder
from unetkit.models.encoders.base import Encoder
from unetkit.registry import register_model


@register_model("unet")
class UNet(SegmentationModel):
    """Encoder, mirrored decoder with concatenated skips, 1x1 head.

    With ``width=64, depth=4, norm="none", upsampling="transposed", in_channels=1, classes=2`` this is
    the paper's network with padded convolutions (31,030,658 parameters).

    Example:
        >>> model = UNet(in_channels=1, classes=2)
        >>> model(torch.zeros(1, 1, 97, 131)).shape
        torch.Size([1, 2, 97, 131])
    """

    attention = False

    def build_decoder(self, config: SegModelConfig, encoder: Encoder) -> nn.Module:
        return UNetDecoder(**self.decoder_kwargs(config, encoder), attention=self.attention)


@register_model("attention_unet")
class AttentionUNet(UNet):
    """U-Net whose skips pass additive attention gates driven by the upsampled decoder features.

    After a forward pass, :meth:`attention_maps` returns each gate's coefficients in [0, 1],
    ``(N, 1, *spatial_of_level)``, shallowest level first, for visualisation.
    """

    attention = True

    def attention_maps(self) -> list[torch.Tensor]:
        if not isinstance(self.decoder, UNetDecoder):
            raise TypeError(
                f"attention maps come from a UNetDecoder, this model has a {type(self.decoder).__name__}"
            )
        return self.decoder.attention_maps()
