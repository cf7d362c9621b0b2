"""The built-in convolutional encoder: no dependencies beyond torch, 2D and 3D.

Stage 0 is a :class:`ConvBlock` at full resolution; every further stage max-pools by 2 and applies
another block, so ``reductions == [1, 2, 4, ...]`` and ``out_channels == widths``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from unetkit.models.blocks import ConvBlock, max_pool_nd
from unetkit.models.encoders.base import Encoder


class PlainEncoder(Encoder):
    """The contracting path of the classic U-Net.

    Args:
        in_channels: input channels.
        spatial_dims: 2 or 3.
        widths: channels per stage, shallowest first (``len(widths) - 1`` poolings).
        norm / act / dropout: passed to every :class:`ConvBlock`.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        spatial_dims: int = 2,
        widths: list[int],
        norm: str = "batch",
        act: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(widths) < 2:
            raise ValueError(f"the plain encoder needs at least 2 stages, got widths={widths}")
        self.in_channels = in_channels
        self.spatial_dims = spatial_dims
        self.out_channels = list(widths)
        self.reductions = [2**i for i in range(len(widths))]
        pool = max_pool_nd(spatial_dims)
        stages = []
        for i, width in enumerate(widths):
            block = ConvBlock(
                widths[i - 1] if i else in_channels,
                width,
                spatial_dims=spatial_dims,
                norm=norm,
                act=act,
                dropout=dropout if i == len(widths) - 1 else 0.0,
            )
            stages.append(nn.Sequential(pool(2), block) if i else block)
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features
