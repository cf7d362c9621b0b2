"""Time-conditioned U-Net denoiser for diffusion models (DDPM, Ho et al. 2020; improved as in Dhariwal & Nichol 2021).

The network maps a noisy image ``x_t`` and its timestep ``t`` (optionally a class label) to a prediction of
the same shape; what it predicts (noise, clean image or velocity) is decided by the noise schedule, not here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from unetkit.models.blocks import UpSample, conv_nd, make_activation, make_norm
from unetkit.registry import register_model


def timestep_embedding(timesteps: torch.Tensor, dim: int, *, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, as in the Transformer paper.

    Args:
        timesteps: ``(N,)`` timesteps.
        dim: embedding size (even).

    Returns:
        ``(N, dim)`` float32: ``[cos(t * f_0), ..., cos(t * f_{h-1}), sin(t * f_0), ...]`` with
        ``f_i = max_period ** (-i / h)`` and ``h = dim // 2``.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    angles = timesteps.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


class ResBlock(nn.Module):
    """Pre-activation residual block whose second norm is modulated by the embedding (FiLM / scale-shift).

    ``h = conv(act(norm(x)))``; ``h = norm(h) * (1 + scale) + shift`` with ``(scale, shift) = Linear(emb)``;
    ``out = skip(x) + conv(dropout(act(h)))``. The last conv starts at zero so each block starts as identity.
    """

    def __init__(self, in_channels: int, out_channels: int, *, emb_channels: int, dropout: float = 0.0) -> None:
        super().__init__()
        conv = conv_nd(2)
        self.norm1 = make_norm("group", in_channels, 2)
        self.conv1 = conv(in_channels, out_channels, kernel_size=3, padding=1)
        self.emb_proj = nn.Linear(emb_channels, 2 * out_channels)
        self.norm2 = make_norm("group", out_channels, 2)
        self.act = make_activation("silu")
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(conv(out_channels, out_channels, kernel_size=3, padding=1))
        self.skip = nn.Identity() if in_channels == out_channels else conv(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        scale, shift = self.emb_proj(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(self.dropout(self.act(h)))


class SelfAttention(nn.Module):
    """Multi-head self-attention over all pixels, with a residual connection (output projection starts at zero)."""

    def __init__(self, channels: int, *, head_channels: int = 32) -> None:
        super().__init__()
        self.heads = max(1, channels // head_channels)
        if channels % self.heads:
            raise ValueError(f"attention channels {channels} not divisible into {self.heads} heads")
        self.norm = make_norm("group", channels, 2)
        self.qkv = conv_nd(2)(channels, 3 * channels, kernel_size=1)
        self.proj = _zero(conv_nd(2)(channels, channels, kernel_size=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        # (N, 3C, H, W) -> 3 x (N, heads, HW, C / heads)
        qkv = self.qkv(self.norm(x)).reshape(n, 3, self.heads, c // self.heads, h * w).permute(1, 0, 2, 4, 3)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return x + self.proj(out.permute(0, 1, 3, 2).reshape(n, c, h, w))


class _Level(nn.Module):
    """One resolution of the encoder or decoder: residual blocks, each optionally followed by attention."""

    def __init__(self, channels_in: Sequence[int], channels_out: int, *, emb: int, attention: bool, dropout: float):
        super().__init__()
        self.blocks = nn.ModuleList(
            ResBlock(c, channels_out, emb_channels=emb, dropout=dropout) for c in channels_in
        )
        self.attns = nn.ModuleList(SelfAttention(channels_out) if attention else nn.Identity() for _ in channels_in)


@register_model("diffusion_unet", spatial_dims=(2,))
class DiffusionUNet(nn.Module):
    """U-Net denoiser ``model(x, t, class_labels=None) -> prediction`` (same shape as ``x``).

    Levels ``0 .. L-1`` run at resolution ``1 / 2**level``; each has ``num_res_blocks`` residual blocks
    conditioned on the timestep (and class) embedding, with self-attention at the levels listed in
    ``attention_levels``; the bottleneck is res-attention-res. Skips are concatenated in the decoder.

    Args:
        in_channels: image channels.
        out_channels: prediction channels (default: ``in_channels``).
        base_channels: channels at level 0.
        channel_mults: per-level channel multipliers; the number of levels is their count.
        num_res_blocks: residual blocks per encoder level (the decoder has one more, as in DDPM).
        attention_levels: level indices with self-attention; default: every level at 1/4 resolution or
            lower (``level >= 2``). The bottleneck always has attention.
        num_classes: number of classes for class-conditional generation (None: unconditional).
        dropout: dropout inside residual blocks.

    Raises (forward):
        ValueError: height or width not divisible by ``2 ** (levels - 1)``, or labels missing / out of range.

    Example:
        >>> model = DiffusionUNet(in_channels=1, base_channels=16, channel_mults=[1, 2])
        >>> model(torch.zeros(2, 1, 32, 32), torch.tensor([0, 999])).shape
        torch.Size([2, 1, 32, 32])
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        out_channels: int | None = None,
        base_channels: int = 32,
        channel_mults: Sequence[int] = (1, 2, 2, 4),
        num_res_blocks: int = 2,
        attention_levels: Sequence[int] | None = None,
        num_classes: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if attention_levels is None:
            attention_levels = [level for level in range(len(channel_mults)) if level >= 2]
        _check_config(in_channels, base_channels, channel_mults, num_res_blocks, attention_levels, num_classes)
        self.in_channels = in_channels
        self.out_channels = out_channels or in_channels
        self.num_classes = num_classes
        self.levels = len(channel_mults)
        self.base_channels = base_channels
        emb = 4 * base_channels
        self.time_mlp = nn.Sequential(nn.Linear(base_channels, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.class_emb = nn.Embedding(num_classes, emb) if num_classes else None
        self.emb_act = nn.SiLU()
        self.conv_in = conv_nd(2)(in_channels, base_channels, kernel_size=3, padding=1)

        widths = [base_channels * m for m in channel_mults]
        attn = set(attention_levels)
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        skips, ch = [base_channels], base_channels
        for level, width in enumerate(widths):
            ins = [ch] + [width] * (num_res_blocks - 1)
            self.down.append(_Level(ins, width, emb=emb, attention=level in attn, dropout=dropout))
            ch = width
            skips += [width] * num_res_blocks
            if level < self.levels - 1:
                self.downsample.append(conv_nd(2)(ch, ch, kernel_size=3, stride=2, padding=1))
                skips.append(ch)
        self.mid1 = ResBlock(ch, ch, emb_channels=emb, dropout=dropout)
        self.mid_attn = SelfAttention(ch)
        self.mid2 = ResBlock(ch, ch, emb_channels=emb, dropout=dropout)

        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for level in reversed(range(self.levels)):
            width = widths[level]
            ins = []
            for _ in range(num_res_blocks + 1):
                ins.append(ch + skips.pop())
                ch = width
            self.up.append(_Level(ins, width, emb=emb, attention=level in attn, dropout=dropout))
            if level > 0:
                self.upsample.append(UpSample(ch, ch, factor=2, spatial_dims=2, mode="interpolate"))
        self.norm_out = make_norm("group", ch, 2)
        self.act_out = make_activation("silu")
        # Zero output: an untrained model predicts exactly 0, a well-defined starting point for every target.
        self.conv_out = _zero(conv_nd(2)(ch, self.out_channels, kernel_size=3, padding=1))

    @property
    def size_multiple(self) -> int:
        """Height and width must be multiples of this."""
        return 2 ** (self.levels - 1)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor | int, class_labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Predict from noisy images ``x`` ``(N, C, H, W)`` at timesteps ``t`` (``(N,)`` or a scalar)."""
        self._check_input(x)
        emb = self.time_mlp(timestep_embedding(self._timesteps(t, x), self.base_channels))
        if self.class_emb is not None:
            emb = emb + self.class_emb(self._labels(class_labels, x))
        elif class_labels is not None:
            raise ValueError("class_labels given but the model is unconditional (built with num_classes=None)")
        emb = self.emb_act(emb)

        h = self.conv_in(x)
        skips = [h]
        for level, stage in enumerate(self.down):
            assert isinstance(stage, _Level)
            for block, attn in zip(stage.blocks, stage.attns, strict=True):
                h = attn(block(h, emb))
                skips.append(h)
            if level < self.levels - 1:
                h = self.downsample[level](h)
                skips.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for i, stage in enumerate(self.up):
            assert isinstance(stage, _Level)
            for block, attn in zip(stage.blocks, stage.attns, strict=True):
                h = attn(block(torch.cat([h, skips.pop()], dim=1), emb))
            if i < self.levels - 1:
                h = self.upsample[i](h)
        return self.conv_out(self.act_out(self.norm_out(h)))

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        m = self.size_multiple
        if x.shape[2] % m or x.shape[3] % m:
            raise ValueError(
                f"diffusion_unet with {self.levels} levels needs height and width divisible by {m}, "
                f"got {x.shape[2]}x{x.shape[3]}; crop or pad the images to a multiple of {m}"
            )

    def _timesteps(self, t: torch.Tensor | int, x: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise ValueError(f"timesteps must be a scalar or shaped ({x.shape[0]},), got {tuple(t.shape)}")
        return t

    def _labels(self, labels: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
        if labels is None:
            raise ValueError(f"this model is class-conditional ({self.num_classes} classes): pass class_labels")
        labels = torch.as_tensor(labels, device=x.device).long()
        if labels.ndim == 0:
            labels = labels.expand(x.shape[0])
        if labels.shape != (x.shape[0],):
            raise ValueError(f"class_labels must be shaped ({x.shape[0]},), got {tuple(labels.shape)}")
        num_classes = self.num_classes or 0  # set whenever labels are read (class_emb exists)
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise ValueError(f"class label out of range: labels must be in 0 .. {num_classes - 1}")
        return labels


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def _check_config(
    in_channels: int,
    base_channels: int,
    channel_mults: Sequence[int],
    num_res_blocks: int,
    attention_levels: Sequence[int],
    num_classes: int | None,
) -> None:
    if in_channels < 1 or base_channels < 1 or num_res_blocks < 1:
        raise ValueError("in_channels, base_channels and num_res_blocks must all be >= 1")
    if base_channels % 2:
        raise ValueError(f"base_channels must be even (it sizes the sinusoidal embedding), got {base_channels}")
    if not channel_mults or any(m < 1 for m in channel_mults):
        raise ValueError(f"channel_mults must be a non-empty list of positive integers, got {list(channel_mults)}")
    bad = [a for a in attention_levels if not 0 <= a < len(channel_mults)]
    if bad:
        raise ValueError(f"attention_levels {bad} out of range for {len(channel_mults)} levels")
    if num_classes is not None and num_classes < 1:
        raise ValueError(f"num_classes must be >= 1 or None, got {num_classes}")
