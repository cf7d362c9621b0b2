"""The one model registry: a name -> class table and the decorator that fills it.

This module is a leaf (it imports nothing from unetkit, not even torch) so every model module can
register itself without an import circle. The public entry points that also make sure the built-in
models are registered (:func:`unetkit.create_model`, :func:`unetkit.list_models`) live in
:mod:`unetkit.models.factory`, which imports the model modules.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_MODELS: dict[str, Callable[..., Any]] = {}
_SPATIAL_DIMS: dict[str, tuple[int, ...]] = {}


def register_model(name: str, *, spatial_dims: tuple[int, ...] = (2, 3)) -> Callable[[type], type]:
    """Class decorator that registers a model under ``name``.

    Args:
        name: registry key used by :func:`unetkit.create_model`.
        spatial_dims: the spatial dimensionalities the model supports (used by generated tests).
    """

    def wrap(cls: type) -> type:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        _MODELS[name] = cls
        _SPATIAL_DIMS[name] = spatial_dims
        cls.registry_name = name  # type: ignore[attr-defined]
        return cls

    return wrap


def registered_names() -> list[str]:
    """Names registered so far, sorted (only what has been imported; see ``unetkit.list_models``)."""
    return sorted(_MODELS)


def spatial_dims_of(name: str) -> tuple[int, ...]:
    """The spatial dimensionalities ``name`` was registered with.

    Raises:
        KeyError: unknown name; the message lists the registered names.
    """
    _check_name(name)
    return _SPATIAL_DIMS[name]


def build(name: str, **kwargs: Any) -> Any:
    """Instantiate the model registered as ``name`` and remember its keyword arguments.

    Raises:
        KeyError: unknown name; the message lists the registered names.
    """
    _check_name(name)
    model = _MODELS[name](**kwargs)
    # Remember how the model was built so save_pretrained can write it as JSON.
    model.init_kwargs = dict(kwargs)
    return model


def _check_name(name: str) -> None:
    if name not in _MODELS:
        raise KeyError(f"unknown model {name!r}; registered models: {', '.join(sorted(_MODELS))}")


__all__ = ["build", "register_model", "registered_names", "spatial_dims_of"]
