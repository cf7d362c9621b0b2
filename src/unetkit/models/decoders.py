"""Decoders of the U-Net family. They differ only in how skips are routed and gated.

* :class:`UNetDecoder`: one block per level, skip concatenated (classic U-Net); with
  ``attention=True`` each skip first passes an :class:`AttentionGate` (Attention U-Net).
* :class:`NestedDecoder`: U-Net++ dense nested skip pathways, optional deep supervision.

Both take the encoder's feature list (shallowest first) and return features at the resolution
of the shallowest feature.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from unetkit.models.blocks import AttentionGate, ConvBlock, UpSample


def _up_factor(reductions: list[int], level: int) -> int:
    factor = reductions[level + 1] // reductions[level]
    if factor * reductions[level] != reductions[level + 1]:
        raise ValueError(f"encoder reductions must grow by integer factors, got {reductions}")
    return factor


class UNetDecoder(nn.Module):
    """Expanding path: at each level upsample, (gate the skip,) concatenate, ConvBlock."""

    def __init__(
        self,
        *,
        encoder_channels: list[int],
        reductions: list[int],
        decoder_channels: list[int],
        spatial_dims: int,
        norm: str,
        act: str,
        upsampling: str,
        dropout: float = 0.0,
        attention: bool = False,
    ) -> None:
        super().__init__()
        levels = len(encoder_channels) - 1
        self.ups = nn.ModuleList()
        self.blocks = nn.ModuleList()
        self.gates = nn.ModuleList() if attention else None
        for level in range(levels):
            c_below = encoder_channels[-1] if level == levels - 1 else decoder_channels[level + 1]
            c_skip, c_out = encoder_channels[level], decoder_channels[level]
            self.ups.append(
                UpSample(c_below, c_out, factor=_up_factor(reductions, level), spatial_dims=spatial_dims, mode=upsampling)
            )
            self.blocks.append(
                ConvBlock(c_out + c_skip, c_out, spatial_dims=spatial_dims, norm=norm, act=act, dropout=dropout)
            )
            if self.gates is not None:
                self.gates.append(
                    AttentionGate(
                        gate_channels=c_out,
                        skip_channels=c_skip,
                        inter_channels=max(c_skip // 2, 1),
                        spatial_dims=spatial_dims,
                    )
                )

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for level in reversed(range(len(self.blocks))):
            x = self.ups[level](x)
            skip = features[level]
            if self.gates is not None:
                skip = self.gates[level](skip, x)
            x = self.blocks[level](torch.cat([x, skip], dim=1))
        return x

    def attention_maps(self) -> list[torch.Tensor]:
        """Gate coefficients of the last forward pass, shallowest level first (empty without gates)."""
        if self.gates is None:
            return []
        maps = (g.coefficients for g in self.gates)  # each gate's last coefficients, None before a forward pass
        return [m for m in maps if isinstance(m, torch.Tensor)]


class NestedDecoder(nn.Module):
    """U-Net++ (Zhou et al. 2018): node ``X[i][j]`` fuses ``X[i][0..j-1]`` and the upsampled ``X[i+1][j-1]``.

    Returns ``X[0][L]`` or, with ``deep_supervision`` in training, the list ``[X[0][L], ..., X[0][1]]``
    (final node first). In eval with deep supervision: ``ds_eval="final"`` returns ``X[0][L]``;
    ``ds_eval="mean"`` returns the list too and the model averages the heads' logits.
    """

    def __init__(
        self,
        *,
        encoder_channels: list[int],
        reductions: list[int],
        decoder_channels: list[int],
        spatial_dims: int,
        norm: str,
        act: str,
        upsampling: str,
        dropout: float = 0.0,
        deep_supervision: bool = False,
    ) -> None:
        super().__init__()
        self.levels = len(encoder_channels) - 1
        self.deep_supervision = deep_supervision
        self.ups = nn.ModuleDict()
        self.blocks = nn.ModuleDict()
        for j in range(1, self.levels + 1):
            for i in range(self.levels - j + 1):
                c_below = encoder_channels[i + 1] if j == 1 else decoder_channels[i + 1]
                c_out = decoder_channels[i]
                c_in = encoder_channels[i] + (j - 1) * c_out + c_out
                self.ups[f"{i}_{j}"] = UpSample(
                    c_below, c_out, factor=_up_factor(reductions, i), spatial_dims=spatial_dims, mode=upsampling
                )
                self.blocks[f"{i}_{j}"] = ConvBlock(
                    c_in, c_out, spatial_dims=spatial_dims, norm=norm, act=act, dropout=dropout
                )

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        nodes: dict[tuple[int, int], torch.Tensor] = {(i, 0): f for i, f in enumerate(features)}
        for j in range(1, self.levels + 1):
            for i in range(self.levels - j + 1):
                inputs = [nodes[(i, k)] for k in range(j)]
                inputs.append(self.ups[f"{i}_{j}"](nodes[(i + 1, j - 1)]))
                nodes[(i, j)] = self.blocks[f"{i}_{j}"](torch.cat(inputs, dim=1))
        if self.deep_supervision:
            return [nodes[(0, j)] for j in range(self.levels, 0, -1)]
        return nodes[(0, self.levels)]
