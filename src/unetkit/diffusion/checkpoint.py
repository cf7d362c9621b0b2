"""Diffusion run directories: ``config.json`` + ``model.safetensors`` (EMA weights). Never unpickles.

``config.json`` uses the same top-level keys as a segmentation checkpoint (``format_version``, ``name``,
``kwargs``) so that ``unetkit.load_model(RUN)`` also rebuilds the denoiser; the ``diffusion`` section adds
what sampling needs (noise schedule, image size, channels, class names).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors.torch import save_file

from unetkit import _io
from unetkit.diffusion.schedule import ScheduleConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1


@dataclass
class DiffusionRun:
    """A loaded run: the denoiser and everything needed to sample from it."""

    model: nn.Module
    schedule: ScheduleConfig
    image_size: int
    channels: int
    class_names: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def save_run(
    directory: str | Path,
    *,
    model: nn.Module,
    schedule: ScheduleConfig,
    image_size: int,
    channels: int,
    class_names: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``config.json`` and ``model.safetensors`` into ``directory``, each atomically.

    Args:
        model: a registered model built by ``create_model`` (its name and kwargs go into the config).
        extra: JSON-serialisable notes (e.g. training settings, final loss) stored under ``diffusion.extra``.

    Raises:
        ValueError: the model was not built through the registry.
    """
    from unetkit._version import __version__

    name, kwargs = getattr(model, "registry_name", ""), getattr(model, "init_kwargs", None)
    if not name or kwargs is None:
        raise ValueError(f"{type(model).__name__} was not built with create_model; cannot save how to rebuild it")
    config = {
        "format_version": FORMAT_VERSION,
        "unetkit_version": __version__,
        "name": name,
        "kwargs": kwargs,
        "diffusion": {
            "schedule": schedule.to_dict(),
            "image_size": image_size,
            "channels": channels,
            "class_names": list(class_names or []),
            "extra": extra or {},
        },
    }
    text = json.dumps(config, indent=2, sort_keys=True)  # fails here, before any file is touched
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp_weights = directory / (WEIGHTS_NAME + ".tmp")
    save_file(state, str(tmp_weights), metadata={"format_version": str(FORMAT_VERSION)})
    os.replace(tmp_weights, directory / WEIGHTS_NAME)
    write_text_atomic(directory / CONFIG_NAME, text)
    return directory


def load_run(directory: str | Path, *, device: str | torch.device = "cpu") -> DiffusionRun:
    """Rebuild a run saved by :func:`save_run`.

    Raises:
        FileNotFoundError: ``config.json`` or ``model.safetensors`` is missing.
        ValueError: not a diffusion run, a newer format, or weights that do not fit the model.
    """
    from unetkit.models.base import load_model

    directory = Path(directory)
    config_path = directory / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found: a diffusion run needs {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        section = json.loads(config_path.read_text())["diffusion"]
        schedule = ScheduleConfig.from_dict(section["schedule"])
        image_size, channels = int(section["image_size"]), int(section["channels"])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{config_path}: not a unetkit diffusion run config ({err!r})") from err
    # The network itself loads like every other model: config.json (name + kwargs) + safetensors.
    model = load_model(directory, device=device)
    return DiffusionRun(
        model=model.to(device).eval(),
        schedule=schedule,
        image_size=image_size,
        channels=channels,
        class_names=list(section.get("class_names", [])),
        extra=dict(section.get("extra", {})),
    )


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file next to ``path``, then rename it over ``path``."""
    _io.write_text_atomic(path, text)
