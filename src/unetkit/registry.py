"""The one model registry.

Models register themselves with :func:`register_model`; :func:`create_model` builds them by name from
keyword arguments alone, so that ``(name, kwargs)`` saved as JSON is enough to rebuild any model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.nn as nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_SPATIAL_DIMS: dict[str, tuple[int, ...]] = {}


def register_model(name: str, *, spatial_dims: tuple[int, ...] = (2, 3)) -> Callable[[type], type]:
    """Class decorator that registers a model under ``name``.

    Args:
        name: registry key used by :func:`create_model`.
        spatial_dims: the spatial dimensionalities the model supports (used by generated tests).
    """

    def wrap(cls: type) -> type:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        _MODELS[name] = cls
        _SPATIAL_DIMS[name] = spatial_dims
        cls.registry_name = name
        return cls

    return wrap


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    _import_builtin_models()
    return sorted(_MODELS)


def supported_spatial_dims(name: str) -> tuple[int, ...]:
    _import_builtin_models()
    _check_name(name)
    return _SPATIAL_DIMS[name]


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model by name.

    Example:
        >>> model = create_model("unet", in_channels=1, classes=2)
        >>> model(torch.zeros(1, 1, 97, 131)).shape
        torch.Size([1, 2, 97, 131])

    Raises:
        KeyError: unknown name; the message lists the valid names.
    """
    _import_builtin_models()
    _check_name(name)
    model = _MODELS[name](**kwargs)
    # Remember how the model was built so save_pretrained can write it as JSON.
    model.init_kwargs = dict(kwargs)
    return model


def _check_name(name: str) -> None:
    if name not in _MODELS:
        raise KeyError(f"unknown model {name!r}; registered models: {', '.join(sorted(_MODELS))}")


def _import_builtin_models() -> None:
    # Imported lazily so `import unetkit.registry` stays cheap and free of cycles.
    from unetkit import models  # noqa: F401
