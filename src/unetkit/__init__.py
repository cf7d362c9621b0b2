"""unetkit: U-Net segmentation for people who segment images for a living.

The public functions are loaded on first use (PEP 562), so ``import unetkit`` (and ``unetkit --help``)
does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from unetkit._version import __version__

if TYPE_CHECKING:
    from unetkit.models.base import load_model
    from unetkit.models.encoders import list_encoders
    from unetkit.models.factory import create_model, list_models

# public name -> module that defines it
_LAZY = {
    "create_model": "unetkit.models.factory",
    "list_models": "unetkit.models.factory",
    "load_model": "unetkit.models.base",
    "list_encoders": "unetkit.models.encoders",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'unetkit' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["__version__", "create_model", "list_models", "list_encoders", "load_model"]
