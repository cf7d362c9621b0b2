"""The denoiser as the diffusion commands build it, and the class labels a conditional run samples with."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def build_model(kwargs: dict[str, Any], *, seed: int, image_size: int) -> torch.nn.Module:
    """Create the denoiser with a seeded initialisation (without touching the global RNG state).

    Args:
        kwargs: the ``diffusion_unet``'s options (``in_channels``, ``base_channels``, ``channel_mults``, ...).
        seed: seed of the initial weights.
        image_size: the training image side, which must be a multiple of the network's total stride.

    Returns:
        The :class:`~unetkit.models.diffusion.DiffusionUNet`.

    Raises:
        ValueError: ``image_size`` is not a multiple of the stride.
        TypeError: the registry's ``diffusion_unet`` is not a DiffusionUNet.
    """
    import torch

    from unetkit.models.diffusion import DiffusionUNet
    from unetkit.models.factory import create_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = create_model("diffusion_unet", **kwargs)
    if not isinstance(model, DiffusionUNet):
        raise TypeError(f"the registry's 'diffusion_unet' built a {type(model).__name__}, not a DiffusionUNet")
    multiple = model.size_multiple
    if image_size % multiple:
        raise ValueError(
            f"--image-size {image_size} must be a multiple of {multiple} for a model with "
            f"{len(kwargs['channel_mults'])} levels (e.g. {max(multiple, image_size // multiple * multiple)})"
        )
    return model


def class_labels_for(label: str | None, class_names: list[str], n: int) -> torch.Tensor | None:
    """Labels for ``n`` samples: the given class (name or index) for all, or every class in turn.

    Args:
        label: a class name or index, or None for every class in turn (None for an unconditional run).
        class_names: the run's classes (empty: unconditional).
        n: how many samples.

    Returns:
        ``(n,)`` int64 labels, or None for an unconditional run.

    Raises:
        ValueError: a label for an unconditional run, or an unknown class.
    """
    import torch

    if not class_names:
        if label is not None:
            raise ValueError("--class-label given but this run was trained without --class-conditional")
        return None
    if label is None:
        return torch.arange(n) % len(class_names)
    if label in class_names:
        index = class_names.index(label)
    elif re.fullmatch(r"\d+", label) and int(label) < len(class_names):
        index = int(label)
    else:
        choices = ", ".join(f"{i}={name}" for i, name in enumerate(class_names))
        raise ValueError(f"unknown class label {label!r}; this run knows: {choices}")
    return torch.full((n,), index, dtype=torch.long)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else the CPU (:func:`unetkit.precision.resolve_device`), as a torch device."""
    import torch

    from unetkit.precision import resolve_device as device_name

    return torch.device(device_name(name))


__all__ = ["build_model", "class_labels_for", "resolve_device"]
