"""Build models by name: the public ``create_model`` / ``list_models`` with every built-in model registered.

Importing the model modules here (not in :mod:`unetkit.registry`) keeps the registry a leaf: model
modules import the registry, this module imports the model modules, and nothing points back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from unetkit import registry
from unetkit.models import diffusion, unet, unetplusplus  # noqa: F401  (registration side effects)

if TYPE_CHECKING:
    import torch.nn as nn


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return registry.registered_names()


def supported_spatial_dims(name: str) -> tuple[int, ...]:
    """The spatial dimensionalities (2, 3) the model ``name`` supports.

    Raises:
        KeyError: unknown name; the message lists the valid names.
    """
    return registry.spatial_dims_of(name)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model by name.

    Example:
        >>> model = create_model("unet", in_channels=1, classes=2)
        >>> model(torch.zeros(1, 1, 97, 131)).shape
        torch.Size([1, 2, 97, 131])

    Raises:
        KeyError: unknown name; the message lists the valid names.
    """
    model: nn.Module = registry.build(name, **kwargs)
    return model


__all__ = ["create_model", "list_models", "supported_spatial_dims"]
