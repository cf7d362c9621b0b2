"""Building blocks shared by every U-Net variant. Each block exists once; variants compose them.

All blocks take ``spatial_dims`` (2 or 3) so the same code serves images and volumes.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

NORMS = ("batch", "instance", "group", "none")
ACTIVATIONS = ("relu", "leaky_relu", "gelu", "silu", "elu")
UPSAMPLING = ("transposed", "interpolate")


def conv_nd(spatial_dims: int) -> type[nn.Module]:
    """The convolution class for 2D or 3D."""
    return {2: nn.Conv2d, 3: nn.Conv3d}[_check_dims(spatial_dims)]


def conv_transpose_nd(spatial_dims: int) -> type[nn.Module]:
    return {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[_check_dims(spatial_dims)]


def max_pool_nd(spatial_dims: int) -> type[nn.Module]:
    return {2: nn.MaxPool2d, 3: nn.MaxPool3d}[_check_dims(spatial_dims)]


def dropout_nd(spatial_dims: int) -> type[nn.Module]:
    return {2: nn.Dropout2d, 3: nn.Dropout3d}[_check_dims(spatial_dims)]


def make_norm(kind: str, channels: int, spatial_dims: int) -> nn.Module:
    """A normalisation layer: ``batch``, ``instance`` (affine), ``group`` (up to 8 groups) or ``none``."""
    _check_dims(spatial_dims)
    if kind == "batch":
        return (nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d)(channels)
    if kind == "instance":
        return (nn.InstanceNorm2d if spatial_dims == 2 else nn.InstanceNorm3d)(channels, affine=True)
    if kind == "group":
        groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; choose one of {', '.join(NORMS)}")


def make_activation(kind: str) -> nn.Module:
    factories = {
        "relu": lambda: nn.ReLU(inplace=True),
        "leaky_relu": lambda: nn.LeakyReLU(0.01, inplace=True),
        "gelu": nn.GELU,
        "silu": lambda: nn.SiLU(inplace=True),
        "elu": lambda: nn.ELU(inplace=True),
    }
    if kind not in factories:
        raise ValueError(f"unknown activation {kind!r}; choose one of {', '.join(ACTIVATIONS)}")
    return factories[kind]()


class ConvBlock(nn.Sequential):
    """Two (conv 3x3 -> norm -> activation) layers, the unit of every U-Net stage.

    The conv has a bias only when there is no normalisation (a norm's shift makes it redundant).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        spatial_dims: int = 2,
        norm: str = "batch",
        act: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        conv = conv_nd(spatial_dims)
        layers: list[nn.Module] = []
        for i, c_in in enumerate((in_channels, out_channels)):
            layers += [
                conv(c_in, out_channels, kernel_size=3, padding=1, bias=norm == "none"),
                make_norm(norm, out_channels, spatial_dims),
                make_activation(act),
            ]
            if i == 0 and dropout > 0:
                layers.append(dropout_nd(spatial_dims)(dropout))
        super().__init__(*layers)


class UpSample(nn.Module):
    """Upsample by an integer factor and map ``in_channels`` to ``out_channels``.

    ``transposed``: a learned transposed conv (kernel = stride = factor), as in the U-Net paper.
    ``interpolate``: bilinear/trilinear interpolation followed by a 1x1 conv.
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, factor: int = 2, spatial_dims: int = 2, mode: str = "transposed"
    ) -> None:
        super().__init__()
        if mode == "transposed":
            self.up = conv_transpose_nd(spatial_dims)(in_channels, out_channels, kernel_size=factor, stride=factor)
            self.proj: nn.Module = nn.Identity()
        elif mode == "interpolate":
            self.up = nn.Upsample(
                scale_factor=factor, mode="bilinear" if spatial_dims == 2 else "trilinear", align_corners=False
            )
            self.proj = conv_nd(spatial_dims)(in_channels, out_channels, kernel_size=1)
        else:
            raise ValueError(f"unknown upsampling {mode!r}; choose one of {', '.join(UPSAMPLING)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.up(x))


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al. 2018) on a skip connection.

    The gating signal ``g`` (decoder features, already upsampled to the skip's resolution) decides
    which positions of the skip ``x`` pass: ``alpha = sigmoid(psi(relu(W_x x + W_g g)))``, output
    ``x * alpha``. The last coefficients are kept in ``self.coefficients`` (N, 1, *spatial) for
    visualisation.
    """

    def __init__(self, *, gate_channels: int, skip_channels: int, inter_channels: int, spatial_dims: int = 2) -> None:
        super().__init__()
        conv = conv_nd(spatial_dims)
        self.w_g = conv(gate_channels, inter_channels, kernel_size=1)
        self.w_x = conv(skip_channels, inter_channels, kernel_size=1, bias=False)
        self.psi = conv(inter_channels, 1, kernel_size=1)
        self.coefficients: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        alpha = torch.sigmoid(self.psi(F.relu(self.w_x(x) + self.w_g(g))))
        self.coefficients = alpha.detach()
        return x * alpha


def _check_dims(spatial_dims: int) -> int:
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    return spatial_dims
