"""Read a state dict file (``.safetensors`` or a weights-only PyTorch pickle) into flat CPU tensors.

Kept apart from :mod:`unetkit.models.encoders.weights` so that modules which only need to read a file
(the packaged Lite0 checkpoint) do not depend on the weight-matching logic.
"""

from __future__ import annotations

import os
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pt", ".pth", ".bin")
# Containers that training scripts commonly wrap a state dict in.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "encoder", "net")
_SHOWN = 10


def read_state_dict_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` or ``.pt/.pth/.bin`` state dict from disk onto the CPU.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unsupported suffix, unreadable file, a pickle with non-tensor objects, or no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"encoder weights file {path} not found")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        from safetensors.torch import load_file

        try:
            raw: Any = load_file(str(path), device="cpu")
        except Exception as err:  # safetensors raises its own error type for corrupt headers
            raise ValueError(f"{path}: unreadable safetensors file ({err})") from err
    elif suffix in TORCH_SUFFIXES:
        raw = _torch_load(path)
    else:
        supported = ", ".join(SAFETENSORS_SUFFIXES + TORCH_SUFFIXES)
        raise ValueError(f"{path}: unsupported weights file type {suffix!r}; use one of {supported}")
    return _flat_tensors(_unwrap(raw), origin=str(path))


def _torch_load(path: Path) -> Any:
    try:
        with warnings.catch_warnings():
            # torch warns that a plain pickle uses a newer protocol than it writes; the weights-only
            # unpickler still decides what may load, and a refusal becomes the error below.
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            # weights_only=True: a pickle may only rebuild tensors and plain containers, never run code.
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path}: refused to load: unetkit reads PyTorch files only with torch.load(weights_only=True), "
            "which accepts files written by torch.save holding tensors and plain containers; this one holds "
            f"other objects or is a raw pickle ({_unpickler_reason(err)}). Never unpickle untrusted files: "
            "re-save just the state dict (model.state_dict()), preferably as .safetensors."
        ) from err
    except Exception as err:  # corrupt zip, truncated file, ...
        raise ValueError(f"{path}: not a readable PyTorch state dict ({err})") from err


def _unpickler_reason(err: Exception) -> str:
    # torch's message is long and ends with how to allowlist the object; keep only what was refused.
    text = str(err)
    marker = "WeightsUnpickler error:"
    if marker not in text:
        return text.splitlines()[0] if text else type(err).__name__
    reason = " ".join(text.split(marker, 1)[1].split("Check the documentation", 1)[0].split())
    return reason.split(" Please use", 1)[0] or "unsupported pickle content"


def _unwrap(raw: Any) -> Any:
    while isinstance(raw, Mapping) and not any(isinstance(v, torch.Tensor) for v in raw.values()):
        inner = next((raw[k] for k in _WRAPPER_KEYS if isinstance(raw.get(k), Mapping)), None)
        if inner is None:
            break
        raw = inner
    return raw


def _flat_tensors(raw: Any, *, origin: str) -> dict[str, torch.Tensor]:
    if not isinstance(raw, Mapping):
        raise ValueError(
            f"{origin}: expected a state dict (a mapping of names to tensors), got {type(raw).__name__}"
        )
    bad = [str(k) for k, v in raw.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(
            f"{origin}: {len(bad)} entries are not tensors (first: {', '.join(bad[:_SHOWN])}); "
            "expected a plain state dict"
        )
    if not raw:
        raise ValueError(f"{origin}: the state dict is empty")
    return {str(k): v for k, v in raw.items()}


__all__ = ["SAFETENSORS_SUFFIXES", "TORCH_SUFFIXES", "read_state_dict_file"]
