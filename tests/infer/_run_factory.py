"""Tiny run directories (plan.yaml + best/) for inference tests, made without training.

The batch-norm layers get non-trivial running statistics and affine parameters (a few forward passes in
train mode on shifted, scaled noise, then random gamma/beta), so that folding them is a real test; the head is centred so labels vary.
"""

from __future__ import annotations

from pathlib import Path

import torch

import unetkit
from unetkit.config import InferConfig, ModelConfig, Plan
from unetkit.data.options import DataConfig


def make_run(
    root: Path,
    *,
    in_channels: int = 1,
    classes: int = 2,
    spatial_dims: int = 2,
    width: int = 4,
    depth: int = 2,
    tile: int | list[int] = 128,
    overlap: float = 0.25,
    tta: str = "none",
    normalization: str = "zscore",
    intensity_mean: list[float] | None = None,
    intensity_std: list[float] | None = None,
    shift: list[float] | None = None,
    seed: int = 0,
    encoder: str = "plain",
    max_pass_pixels: int | None = 0,
) -> Path:
    """Write ``root/plan.yaml`` and ``root/best`` for an untrained U-Net with batch norm; returns ``root``.

    ``encoder``: ``plain`` (``depth`` and ``width`` apply) or a timm backbone, built as the planner builds its
    default (``tf_efficientnet_lite0``) but with random weights. ``max_pass_pixels`` defaults to 0 (tiles of ``tile``,
    as the tiling tests expect); None is the planner's speed tiling (one pass for an image that fits).
    """
    kwargs = {"in_channels": in_channels, "classes": classes, "spatial_dims": spatial_dims, "encoder": encoder,
              "norm": "batch"}
    if encoder == "plain":
        kwargs.update(depth=depth, width=width)
    tile_size = list(tile) if isinstance(tile, list) else [tile] * spatial_dims
    plan = Plan(
        data=DataConfig(in_channels=in_channels, spatial_dims=spatial_dims, normalization=normalization,
                        intensity_mean=list(intensity_mean or []), intensity_std=list(intensity_std or [])),
        model=ModelConfig(name="unet", kwargs=kwargs),
        infer=InferConfig(tile_size=tile_size, overlap=overlap, tta=tta, batch_size=2, shift=list(shift or []),
                          max_pass_pixels=max_pass_pixels),
    )
    root.mkdir(parents=True, exist_ok=True)
    plan.save(root / "plan.yaml")
    torch.manual_seed(seed)
    model = unetkit.create_model("unet", **kwargs)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(2, in_channels, *([32] * spatial_dims)) * 2.5 + 0.7)
        for module in model.modules():
            if isinstance(module, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.3, 0.3)
        # Centre the head so that an untrained model still predicts a mixture of classes (label tests
        # would otherwise compare constant maps).
        model.eval()
        model.head.weight.mul_(4.0)
        model.head.bias.zero_()
        logits = model(torch.randn(1, in_channels, *([64] * spatial_dims)))
        model.head.bias.copy_(-logits.flatten(2).median(dim=2).values[0])
    model.eval().save_pretrained(root / "best")
    return root
