"""Encoders by name: the built-in ``plain`` encoder and any timm backbone.

``ENCODERS`` lists the names that are tested in this project; :func:`create_encoder` also accepts any
other name timm knows (``timm.list_models()``), optionally written ``timm-<name>`` or ``tu-<name>``.
timm is imported only when a timm encoder is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from unetkit.models.encoders.base import Encoder

PLAIN = "plain"
TIMM_PREFIXES = ("timm-", "tu-")
# Options of the plain encoder that the models always pass; timm backbones bring their own norm/act.
PLAIN_ONLY_OPTIONS = ("widths", "norm", "act", "dropout")
DEFAULT_PLAIN_WIDTH = 32


@dataclass(frozen=True)
class EncoderInfo:
    """One entry of :data:`ENCODERS`.

    Attributes:
        kind: ``plain`` or ``timm``.
        spatial_dims: the dimensionalities the encoder supports.
        summary: one line for listings.
    """

    kind: str
    spatial_dims: tuple[int, ...]
    summary: str


_TIMM_2D = (2,)
ENCODERS: dict[str, EncoderInfo] = {
    PLAIN: EncoderInfo("plain", (2, 3), "built-in double-conv stages, reductions 1..2^depth; 2D and 3D"),
    "resnet18": EncoderInfo("timm", _TIMM_2D, "ResNet-18 (11M params)"),
    "resnet34": EncoderInfo("timm", _TIMM_2D, "ResNet-34 (21M)"),
    "resnet50": EncoderInfo("timm", _TIMM_2D, "ResNet-50 (24M)"),
    "efficientnet_b0": EncoderInfo("timm", _TIMM_2D, "EfficientNet-B0 (4M)"),
    "efficientnet_lite0": EncoderInfo("timm", _TIMM_2D, "EfficientNet-Lite0, PyTorch-style padding (3.4M)"),
    "tf_efficientnet_lite0": EncoderInfo(
        "timm", _TIMM_2D, "EfficientNet-Lite0, TF padding; encoder_weights='imagenet' is bundled (3.4M)"
    ),
    "mobilenetv3_large_100": EncoderInfo("timm", _TIMM_2D, "MobileNetV3-Large (3M)"),
    "convnext_tiny": EncoderInfo("timm", _TIMM_2D, "ConvNeXt-T, 4 stages, reductions 4..32 (28M)"),
    "regnety_004": EncoderInfo("timm", _TIMM_2D, "RegNetY-400MF (4M)"),
}


def list_encoders() -> list[str]:
    """``plain`` followed by the tested timm backbones. Any other timm model name works too."""
    return [PLAIN] + sorted(name for name in ENCODERS if name != PLAIN)


def resolve_encoder(name: str) -> tuple[str, str]:
    """``(kind, canonical name)`` for an encoder name; ``timm-``/``tu-`` prefixes are removed.

    Raises:
        ValueError: neither ``plain`` nor a timm model; the message lists the tested encoders.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"encoder name must be a non-empty string, got {name!r}")
    if name == PLAIN:
        return "plain", PLAIN
    bare = next((name[len(p) :] for p in TIMM_PREFIXES if name.startswith(p)), name)
    if bare in ENCODERS:
        return ENCODERS[bare].kind, bare
    if _is_timm_model(bare):
        return "timm", bare
    raise ValueError(
        f"unknown encoder {name!r}; known encoders: {', '.join(list_encoders())} "
        "(or any name from timm.list_models())"
    )


def create_encoder(
    name: str,
    *,
    in_channels: int,
    spatial_dims: int = 2,
    depth: int | None = None,
    weights: str | None = None,
    **kwargs: Any,
) -> Encoder:
    """Build an encoder by name.

    Args:
        name: ``plain``, a name from :func:`list_encoders`, or any timm model name (``tu-``/``timm-``
            prefixes allowed).
        in_channels: image channels.
        spatial_dims: 2, or 3 (``plain`` only).
        depth: plain: number of poolings when ``widths`` is not given (default 4: widths 32..512);
            timm: number of feature stages to return (default: all, usually 5).
        weights: pretrained weights (file path, ``timm:<name>``, ``hf-hub:<repo>`` or ``imagenet``);
            see :func:`unetkit.models.encoders.weights.load_encoder_weights`.
        **kwargs: plain encoder options ``widths``, ``norm``, ``act``, ``dropout``. They are ignored for
            timm backbones, which have their own normalisation and activations.

    Raises:
        ValueError: unknown name (the message lists the known ones), unsupported ``spatial_dims``, or
            options that do not fit.
    """
    kind, canonical = resolve_encoder(name)
    unknown = sorted(set(kwargs) - set(PLAIN_ONLY_OPTIONS))
    if unknown:
        raise ValueError(f"unknown encoder option(s) {unknown}; accepted: {list(PLAIN_ONLY_OPTIONS)}")
    encoder: Encoder
    if kind == "plain":
        encoder = _create_plain(in_channels=in_channels, spatial_dims=spatial_dims, depth=depth, **kwargs)
    else:
        from unetkit.models.encoders.timm_encoder import TimmEncoder

        encoder = TimmEncoder(name=canonical, in_channels=in_channels, depth=depth, spatial_dims=spatial_dims)
    if weights is not None:
        from unetkit.models.encoders.weights import load_encoder_weights

        load_encoder_weights(encoder, weights)
    return encoder


def _create_plain(*, in_channels: int, spatial_dims: int, depth: int | None, **options: Any) -> Encoder:
    from unetkit.models.encoders.plain import PlainEncoder

    widths = options.pop("widths", None)
    if widths is None:
        poolings = 4 if depth is None else depth
        widths = [DEFAULT_PLAIN_WIDTH * 2**i for i in range(poolings + 1)]
    elif depth is not None and len(widths) != depth + 1:
        raise ValueError(f"widths {list(widths)} give {len(widths) - 1} poolings but depth={depth}")
    return PlainEncoder(in_channels=in_channels, spatial_dims=spatial_dims, widths=list(widths), **options)


def _is_timm_model(name: str) -> bool:
    try:
        import timm
    except ModuleNotFoundError:  # pragma: no cover - timm is a hard dependency
        return False
    return bool(timm.is_model(name))


__all__ = ["ENCODERS", "EncoderInfo", "create_encoder", "list_encoders", "resolve_encoder"]
