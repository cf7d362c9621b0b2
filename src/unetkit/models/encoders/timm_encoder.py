"""Any timm backbone as a U-Net encoder (2D only).

The backbone is built with ``features_only=True`` and ``pretrained=False``: construction never touches
the network. Pretrained weights are loaded afterwards by
:func:`unetkit.models.encoders.weights.load_encoder_weights` (``create_encoder`` does it for you), which
reads local files (or, only when asked by name, fetches from a hub).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from unetkit.models.encoders.base import Encoder

if TYPE_CHECKING:
    from timm.models import FeatureInfo


class TimmEncoder(Encoder):
    """A timm feature extractor that obeys the :class:`Encoder` contract.

    Args:
        name: a timm model name (``resnet34``, ``efficientnet_b0``, ``convnext_tiny``, ...); a pretrained
            tag (``resnet34.a1_in1k``) is accepted and only selects the architecture.
        in_channels: input channels. The stem is built for this many channels; pretrained 3-channel
            stems are adapted when weights are loaded (see :func:`adapt_input_conv_weight`).
        depth: how many feature stages to return, shallowest first; None returns every stage timm
            offers (5 for most CNNs: reductions 2..32; 4 for ConvNeXt: reductions 4..32).
        spatial_dims: must be 2; timm backbones are 2D.

    Attributes:
        out_channels / reductions: per returned stage, from timm's ``feature_info``.
        arch: the architecture name (``name`` without its pretrained tag).
        stem_weight_key: key of the first convolution's weight in ``self.model.state_dict()``.
        pretrained_cfg: timm's preprocessing config (``mean``, ``std``, ``input_size``, ...).

    Raises:
        ValueError: unknown timm name, ``spatial_dims != 2``, ``in_channels < 1`` or a ``depth`` the
            backbone does not have.
    """

    def __init__(
        self,
        *,
        name: str,
        in_channels: int = 3,
        depth: int | None = None,
        spatial_dims: int = 2,
    ) -> None:
        super().__init__()
        import timm

        if spatial_dims != 2:
            raise ValueError(
                f"timm encoder {name!r} is 2D only, got spatial_dims={spatial_dims}; "
                "use encoder='plain' for 3D volumes"
            )
        if not timm.is_model(name):
            raise ValueError(f"{name!r} is not a timm model name (see timm.list_models())")
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        self.name = name
        self.arch = name.split(".", 1)[0]
        self.in_channels = in_channels
        self.spatial_dims = 2
        n_stages = _count_feature_stages(name)
        if depth is None:
            depth = n_stages
        if not 1 <= depth <= n_stages:
            raise ValueError(
                f"timm encoder {name!r} has {n_stages} feature stages; depth must be 1..{n_stages}, got {depth}"
            )
        self.out_indices = tuple(range(depth))
        self.model = timm.create_model(
            name, pretrained=False, features_only=True, out_indices=self.out_indices, in_chans=in_channels
        )
        info = _feature_info(self.model, name)
        self.out_channels = [int(c) for c in info.channels()]
        self.reductions = [int(r) for r in info.reduction()]
        self.pretrained_cfg = dict(getattr(self.model, "pretrained_cfg", {}) or {})
        self.stem_weight_key = _stem_weight_key(
            self.pretrained_cfg.get("first_conv"), self.model.state_dict()
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features ``[(N, out_channels[i], H / reductions[i], W / reductions[i]), ...]`` for ``x (N, C, H, W)``.

        Sizes are exact when H and W are multiples of ``output_stride`` (the models pad to that).
        """
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"timm encoder {self.name!r} expects (N, {self.in_channels}, H, W) input, got {tuple(x.shape)}"
            )
        return list(self.model(x))

    def full_model_keys(self) -> set[str]:
        """State-dict keys of the complete timm classifier (built on the meta device: no memory, no init cost).

        Keys a classifier checkpoint has but the feature model lacks (head, classifier, unused late stages)
        are dropped silently by the weight loader; anything else that does not fit is an error.
        """
        import timm

        with torch.device("meta"):
            full = timm.create_model(self.name, pretrained=False)
        return set(full.state_dict())

    def feature_key(self, key: str, feature_keys: Iterable[str]) -> str | None:
        """The key of ``self.model`` that a full-model (or feature-model) key ``key`` refers to, or None.

        timm's generic feature wrapper flattens the first level of ``nn.Sequential`` children, so the full
        model's ``stem.0.weight`` is the feature model's ``stem_0.weight``.
        """
        keys = feature_keys if isinstance(feature_keys, (set, dict)) else set(feature_keys)
        if key in keys:
            return key
        parts = key.split(".")
        if len(parts) > 2:
            flattened = f"{parts[0]}_{parts[1]}." + ".".join(parts[2:])
            if flattened in keys:
                return flattened
        return None


def _count_feature_stages(name: str) -> int:
    # Built on the meta device: only the feature_info is needed, so no weights are allocated.
    import timm

    with torch.device("meta"):
        probe = timm.create_model(name, pretrained=False, features_only=True)
    return len(_feature_info(probe, name).channels())


def _feature_info(model: nn.Module, name: str) -> FeatureInfo:
    """The ``feature_info`` of a timm model built with ``features_only=True``."""
    from timm.models import FeatureInfo

    info = getattr(model, "feature_info", None)
    if not isinstance(info, FeatureInfo):
        raise TypeError(
            f"timm model {name!r} built with features_only=True has no FeatureInfo ({type(info).__name__})"
        )
    return info


def _stem_weight_key(first_conv: str | Iterable[str] | None, state: dict[str, torch.Tensor]) -> str | None:
    if first_conv is None:
        return None
    names = [first_conv] if isinstance(first_conv, str) else list(first_conv)
    parts = names[0].split(".")
    candidates = [names[0] + ".weight"]
    if len(parts) > 1:
        candidates.append("_".join(parts[:2]) + "".join("." + p for p in parts[2:]) + ".weight")
    for key in candidates:
        if key in state and state[key].ndim == 4:
            return key
    return None


def adapt_input_conv_weight(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Turn an RGB stem kernel ``(out, 3, kh, kw)`` into one for ``in_channels`` inputs.

    * 1 channel: the sum of the R, G and B kernels, so a grey image ``g`` gives the response the RGB
      network gives to ``(g, g, g)``.
    * 2 or more channels: the RGB kernels repeated cyclically (R, G, B, R, ...) and scaled by
      ``3 / in_channels`` so that, for channels with similar statistics, the activation scale stays
      what the following batch norm was trained on.
    * 3 channels: unchanged.

    Returns:
        A new tensor ``(out, in_channels, kh, kw)`` with ``weight``'s dtype.

    Raises:
        ValueError: ``weight`` is not a 4D kernel with 3 input channels, or ``in_channels < 1``.
    """
    if weight.ndim != 4 or weight.shape[1] != 3:
        raise ValueError(f"expected an RGB conv kernel (out, 3, kh, kw), got shape {tuple(weight.shape)}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    if in_channels == 3:
        return weight.clone()
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    index = torch.arange(in_channels) % 3
    return weight[:, index] * (3.0 / in_channels)


__all__ = ["TimmEncoder", "adapt_input_conv_weight"]
