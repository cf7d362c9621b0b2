"""What every segmentation model shares: config, encoder + decoder + head, any-size inputs, save/load.

Subclasses only decide how skips are routed (see ``decoders.py``); everything else lives here.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from unetkit._io import atomic_path, write_text_atomic
from unetkit.config import ModelConfig
from unetkit.model_config import SegModelConfig
from unetkit.models.blocks import ConvBlock, UpSample, conv_nd
from unetkit.models.encoders.base import Encoder

CHECKPOINT_FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class FullResolutionStage(nn.Sequential):
    """The last upsampling stage of a strided backbone: ``UpSample`` then ``ConvBlock`` (kept as a
    two-item Sequential so checkpoints keep their ``final_up.0`` / ``final_up.1`` keys), with the
    (padded) input image concatenated in between when ``input_skip``."""

    def __init__(self, up: nn.Module, block: nn.Module, *, input_skip: bool) -> None:
        super().__init__(up, block)
        self.input_skip = input_skip

    def forward(self, features: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        up, block = self[0], self[1]
        features = up(features)
        if self.input_skip:
            if image is None:
                raise ValueError("this stage joins the input image at full resolution; pass it")
            features = torch.cat([features, image.to(features.dtype)], dim=1)
        return block(features)


class SegmentationModel(nn.Module):
    """Encoder -> decoder -> 1x1 head, with inputs of any size padded internally and cropped back.

    Subclasses implement :meth:`build_decoder` returning a module that maps the encoder's feature list to
    one tensor at the resolution of the shallowest feature (or, for deep supervision, a list of them).
    """

    config_class: type[SegModelConfig] = SegModelConfig
    registry_name: str = ""

    def __init__(self, config: SegModelConfig | None = None, **kwargs: Any) -> None:
        super().__init__()
        if config is None:
            config = self.config_class(**kwargs)
        elif kwargs:
            raise TypeError("pass either a config object or keyword arguments, not both")
        self.config = config
        self.encoder = self.build_encoder(config)
        self.decoder = self.build_decoder(config, self.encoder)
        self.final_up = self._build_final_up(config)
        head_in = self._level0_channels() if self.final_up is None else self._final_channels()
        self.head = conv_nd(config.spatial_dims)(head_in, config.classes, kernel_size=1)
        self._encoder_frozen = False

    # -- construction -------------------------------------------------------------------------
    @staticmethod
    def build_encoder(config: SegModelConfig) -> Encoder:
        from unetkit.models.encoders import create_encoder

        return create_encoder(
            config.encoder,
            in_channels=config.in_channels,
            spatial_dims=config.spatial_dims,
            widths=config.encoder_widths(),
            norm=config.norm,
            act=config.act,
            dropout=config.dropout,
            weights=config.encoder_weights,
        )

    def build_decoder(self, config: SegModelConfig, encoder: Encoder) -> nn.Module:  # pragma: no cover
        raise NotImplementedError

    def decoder_kwargs(self, config: SegModelConfig, encoder: Encoder) -> dict[str, Any]:
        """What every decoder of the family takes: the encoder's contract plus the shared layer options."""
        return {
            "encoder_channels": encoder.out_channels,
            "reductions": encoder.reductions,
            "decoder_channels": self.decoder_channels(),
            "spatial_dims": config.spatial_dims,
            "norm": config.norm,
            "act": config.act,
            "upsampling": config.upsampling,
            "dropout": config.dropout,
        }

    def decoder_channels(self) -> list[int]:
        """Channels per decoder level, shallowest first (defaults mirror the encoder)."""
        if self.config.decoder_channels is not None:
            channels = list(self.config.decoder_channels)
            if len(channels) != len(self.encoder.out_channels) - 1:
                raise ValueError(
                    f"decoder_channels needs {len(self.encoder.out_channels) - 1} entries (one per skip level), "
                    f"got {len(channels)}"
                )
            return channels
        if self.config.encoder == "plain":
            return list(self.encoder.out_channels[:-1])
        # timm backbones: a light decoder, as wide as the skip it receives but at most 256.
        return [min(max(c, 16), 256) for c in self.encoder.out_channels[:-1]]

    def _level0_channels(self) -> int:
        return self.decoder_channels()[0]

    def _final_channels(self) -> int:
        return max(self._level0_channels() // 2, 16)

    def _build_final_up(self, config: SegModelConfig) -> nn.Module | None:
        # Backbones whose shallowest feature is already strided (timm: reduction 2) need a last
        # upsampling stage without a skip to get back to full resolution.
        factor = self.encoder.reductions[0]
        if factor == 1:
            return None
        c_in, c_out = self._level0_channels(), self._final_channels()
        skip = config.in_channels if getattr(config, "input_skip", False) else 0
        return FullResolutionStage(
            UpSample(c_in, c_out, factor=factor, spatial_dims=config.spatial_dims, mode=config.upsampling),
            ConvBlock(
                c_out + skip, c_out, spatial_dims=config.spatial_dims, norm=config.norm, act=config.act
            ),
            input_skip=bool(skip),
        )

    # -- forward ------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Logits ``(N, classes, *spatial)`` for an input ``(N, in_channels, *spatial)`` of any size."""
        self._check_input(x)
        x, crop = _pad_to_multiple(x, self.encoder.output_stride)
        decoded = self.decoder(self.encoder(x))
        if isinstance(decoded, list):
            return [self._head(d, x, crop) for d in decoded]
        return self._head(decoded, x, crop)

    def _head(self, features: torch.Tensor, image: torch.Tensor, crop: tuple[slice, ...]) -> torch.Tensor:
        if self.final_up is not None:
            features = self.final_up(features, image)
        return self.head(features)[(slice(None), slice(None)) + crop]

    def _check_input(self, x: torch.Tensor) -> None:
        dims = self.config.spatial_dims
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
        if x.ndim != dims + 2:
            layout = "(N, C, H, W)" if dims == 2 else "(N, C, D, H, W)"
            raise ValueError(
                f"{type(self).__name__} is a {dims}D model and expects a {dims + 2}D tensor {layout}; "
                f"got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"{type(self).__name__} was built for {self.config.in_channels} input channel(s); "
                f"got {x.shape[1]} (shape {tuple(x.shape)})"
            )

    # -- encoder freezing ---------------------------------------------------------------------
    def freeze_encoder(self) -> None:
        """Stop training the encoder: no gradients, and its norm statistics stay fixed."""
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self._encoder_frozen = True
        self.encoder.eval()

    def unfreeze_encoder(self) -> None:
        for p in self.encoder.parameters():
            p.requires_grad_(True)
        self._encoder_frozen = False
        self.encoder.train(self.training)

    def train(self, mode: bool = True) -> SegmentationModel:
        super().train(mode)
        if self._encoder_frozen:
            self.encoder.eval()
        return self

    # -- persistence --------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``config.json`` and ``model.safetensors`` to ``directory`` (atomically, file by file)."""
        return save_pretrained(self, directory)


def model_config_dict(model: nn.Module) -> dict[str, Any]:
    """The JSON that rebuilds ``model`` with ``create_model``."""
    from unetkit._version import __version__

    name = getattr(model, "registry_name", "")
    if not name:
        raise ValueError(f"{type(model).__name__} is not a registered model; cannot save its config")
    kwargs = dict(getattr(model, "init_kwargs", {}))
    config = getattr(model, "config", None)
    if isinstance(config, SegModelConfig):
        kwargs = dataclasses.asdict(config)
        kwargs["encoder_weights"] = None  # the weights are in model.safetensors now
    return {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "unetkit_version": __version__,
        "name": name,
        "kwargs": kwargs,
    }


def save_pretrained(
    model: nn.Module, directory: str | os.PathLike[str], *, extra: dict[str, Any] | None = None
) -> Path:
    """Write ``config.json`` (+ the JSON-able ``extra`` entries beside the model's, e.g. the trainer's plan)
    and ``model.safetensors`` to ``directory``, each atomically. :func:`load_model` ignores the extras."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {**(extra or {}), **model_config_dict(model)}
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(directory / WEIGHTS_NAME) as tmp_weights:
        save_file(state, str(tmp_weights), metadata={"format_version": str(CHECKPOINT_FORMAT_VERSION)})
    write_text_atomic(directory / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True))
    return directory


def load_model(directory: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model from ``config.json`` + ``model.safetensors`` alone. Never unpickles anything.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: the config is malformed or newer than this version, or the weights do not fit.
    """
    # The registry is complete here: importing this module ran unetkit/models/__init__, which imports
    # every built-in model (through unetkit.models.factory).
    from unetkit import registry

    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: a saved model needs {CONFIG_NAME} and {WEIGHTS_NAME}")
    name, kwargs, version = _model_entry(config_path)
    if version > CHECKPOINT_FORMAT_VERSION:
        raise ValueError(
            f"{config_path}: format version {version} is newer than this unetkit reads ({CHECKPOINT_FORMAT_VERSION})"
        )
    try:
        ModelConfig(name=name, kwargs=kwargs).typed()  # a built-in model's options: types, finite numbers
        model = registry.build(name, **kwargs)
    except (TypeError, ValueError, KeyError, RuntimeError) as err:  # unknown name or keyword, a refused value
        reason = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise ValueError(f"{config_path}: cannot build model {name!r} from its kwargs ({reason})") from err
    try:
        state = load_file(str(weights_path), device=str(device))
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise ValueError(f"{weights_path}: unreadable safetensors file ({err})") from err
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise ValueError(f"{weights_path}: weights do not fit the model in {config_path} ({err})") from err
    if missing or unexpected:
        raise ValueError(
            f"{weights_path}: weights do not fit the model; missing {missing[:10]}, unexpected {unexpected[:10]}"
        )
    return model.to(device)


def _model_entry(config_path: Path) -> tuple[str, dict[str, Any], int]:
    """``(name, kwargs, format_version)`` of a checkpoint's ``config.json``, each of its type.

    Raises:
        ValueError: the file is unreadable (:func:`unetkit.run_layout.read_model_config`), or an entry is
            missing or of the wrong type; the message names the file.
    """
    from unetkit.run_layout import read_model_config

    config = read_model_config(config_path)
    name, kwargs, version = config.get("name"), config.get("kwargs"), config.get("format_version")
    if not isinstance(name, str) or not isinstance(kwargs, dict) or not isinstance(version, int):
        found = {k: type(config.get(k)).__name__ for k in ("name", "kwargs", "format_version")}
        raise ValueError(f"{config_path}: not a unetkit model config (expected name: str, kwargs: object, "
                         f"format_version: int; found {found})")
    return name, kwargs, version


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Zero-pad the spatial dims up to a multiple (split evenly between both sides); return the crop back."""
    spatial = x.shape[2:]
    pads: list[tuple[int, int]] = []
    crop: list[slice] = []
    for size in spatial:
        total = (multiple - size % multiple) % multiple
        before = total // 2
        crop.append(slice(before, before + size))
        pads.append((before, total - before))
    # Always pad (by zero when the size already fits) and never branch on the size: under torch.export
    # (ONNX export) sizes are symbolic, and an ``if`` on them bakes the example input's case into the
    # graph; an export traced at 64x64 then failed at 97x131. The extra copy is negligible in eager mode.
    # F.pad takes pads for the last dim first.
    flat = [p for pair in reversed(pads) for p in pair]
    return F.pad(x, flat), tuple(crop)
