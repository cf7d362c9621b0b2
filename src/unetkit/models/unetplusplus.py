"""U-Net++ (Zhou et al. 2018): nested dense skip pathways with optional deep supervision."""

from __future__ import annotations

import torch
import torch.nn as nn

from unetkit.model_config import UNetPlusPlusConfig
from unetkit.models.base import SegmentationModel, SegModelConfig
from unetkit.models.decoders import NestedDecoder
from unetkit.models.encoders.base import Encoder
from unetkit.registry import register_model


@register_model("unetplusplus")
class UNetPlusPlus(SegmentationModel):
    config_class = UNetPlusPlusConfig
    config: UNetPlusPlusConfig  # built from config_class (build_decoder checks it)

    def build_decoder(self, config: SegModelConfig, encoder: Encoder) -> nn.Module:
        assert isinstance(config, UNetPlusPlusConfig)
        if config.ds_eval not in ("final", "mean"):
            raise ValueError(f"ds_eval must be 'final' or 'mean', got {config.ds_eval!r}")
        return NestedDecoder(**self.decoder_kwargs(config, encoder), deep_supervision=config.deep_supervision)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        out = super().forward(x)
        if not isinstance(out, list) or self.training:
            return out
        if self.config.ds_eval == "mean":
            return torch.stack(out).mean(dim=0)
        return out[0]
