"""unetkit: U-Net segmentation for people who segment images for a living."""

from __future__ import annotations

__version__ = "0.1.0"

from unetkit.models.base import load_model  # noqa: E402
from unetkit.registry import create_model, list_models  # noqa: E402


def list_encoders() -> list[str]:
    """Encoder names usable as ``encoder=``: ``plain`` plus tested timm backbones (any timm name works)."""
    from unetkit.models.encoders import list_encoders as _list

    return _list()


__all__ = ["__version__", "create_model", "list_models", "list_encoders", "load_model"]
