"""The encoder contract every backbone obeys.

An encoder maps an input ``(N, C, *spatial)`` to a list of feature maps, shallowest first. It
declares, per returned stage, ``out_channels[i]`` and ``reductions[i]`` (the stride of that stage
relative to the input, a power of two). Decoders rely on nothing else.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class Encoder(nn.Module):
    """Base class of encoders. Subclasses set ``out_channels``, ``reductions`` and ``spatial_dims``."""

    out_channels: list[int]
    reductions: list[int]
    spatial_dims: int = 2
    in_channels: int

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def output_stride(self) -> int:
        """The largest reduction: inputs must be a multiple of this (models pad internally)."""
        return max(self.reductions)
