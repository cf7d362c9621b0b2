"""Training state for exact resume: tensors in safetensors, everything else in JSON. Never pickled.

``state.safetensors`` holds the model, the EMA copy, the optimiser's per-parameter tensors and the torch
RNG state; ``state.json`` holds the step, the optimiser's hyper-parameters, the fp16 loss scaler's
state and whatever scalars the loop keeps (best score, planned steps). No sampler state is needed: the
batch of step ``s`` depends only on ``(seed, s)`` (see :mod:`unetkit.train.prefetch`). Both are written to temp files and renamed,
JSON last, so a kill at any moment leaves the previous complete state (the JSON names the tensor file's
generation to detect a torn pair).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from unetkit._io import atomic_path

STATE_JSON = "state.json"
# state.json holds a step, hyper-parameters and a file name: a few KiB.
STATE_JSON_MAX_BYTES = 4 * 2**20
STATE_TENSORS = "state.safetensors"
# How batches are drawn; states without it (older unetkit) kept one numpy generator across steps.
BATCH_SAMPLING = "per-step"


def save_training_state(
    run_dir: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: torch.nn.Module | None,
    scalars: dict[str, Any],
    grad_scaler: torch.amp.GradScaler | None = None,
) -> None:
    generation = int(scalars.get("step", 0))
    tensors: dict[str, torch.Tensor] = {}
    for k, v in model.state_dict().items():
        tensors[f"model.{k}"] = v.detach().cpu().contiguous()
    if ema is not None:
        for k, v in ema.state_dict().items():
            tensors[f"ema.{k}"] = v.detach().cpu().contiguous()
    opt_state = optimizer.state_dict()
    for index, per_param in opt_state["state"].items():
        for name, value in per_param.items():
            tensor = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            tensors[f"optim.{index}.{name}"] = tensor.detach().cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    tensor_name = f"{STATE_TENSORS}.{generation}"
    _atomic(run_dir / tensor_name, lambda p: save_file(tensors, str(p)))
    meta = {
        "scalars": scalars,
        "batches": BATCH_SAMPLING,
        "grad_scaler": grad_scaler.state_dict() if grad_scaler is not None else None,
        "param_groups": opt_state["param_groups"],
        "tensors": tensor_name,
    }
    _atomic(run_dir / STATE_JSON, lambda p: p.write_text(json.dumps(meta, indent=1)))
    for old in run_dir.glob(f"{STATE_TENSORS}.*"):
        if old.name != tensor_name and not old.name.endswith(".tmp"):
            old.unlink()


def load_training_state(
    run_dir: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: torch.nn.Module | None,
    grad_scaler: torch.amp.GradScaler | None = None,
) -> dict[str, Any]:
    """Restore model/optimiser/EMA/loss scaler/torch RNG in place; return the loop's scalars.

    A state written by an older unetkit (one numpy generator for all batches) still resumes, with a
    warning: the batches after the resume point then differ from those the interrupted run would have drawn.
    """
    meta_path = run_dir / STATE_JSON
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found: nothing to resume in {run_dir}")
    meta, tensors = _read_state(meta_path)
    _check_param_groups(meta_path, meta.get("param_groups"), optimizer)
    try:
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        if ema is not None:
            ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
        per_param: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, index, name = key.split(".", 2)
                per_param.setdefault(int(index), {})[name] = value
        optimizer.load_state_dict({"state": per_param, "param_groups": meta["param_groups"]})
        torch.set_rng_state(tensors["rng.torch"])
        if grad_scaler is not None and meta.get("grad_scaler"):
            grad_scaler.load_state_dict(meta["grad_scaler"])
    except (TypeError, KeyError, IndexError, RuntimeError, ValueError, AttributeError) as err:
        reason = " ".join(str(err).split())[:300]
        raise ValueError(f"{meta_path}: does not fit this run ({type(err).__name__}: {reason})") from None
    if meta.get("batches") != BATCH_SAMPLING:
        warnings.warn(
            f"{meta_path} was written by an older unetkit that drew batches from one running generator; "
            "resuming with per-step batches, so training continues but not exactly as the interrupted run would have",
            UserWarning,
            stacklevel=2,
        )
    return meta["scalars"]


def _read_state(meta_path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``state.json`` and the tensors it names; a malformed or foreign state is a ValueError naming the file."""
    from unetkit.untrusted import load_json_limited

    try:
        meta = load_json_limited(meta_path, what="unetkit training state", max_bytes=STATE_JSON_MAX_BYTES)
        name = meta["tensors"]
        if not isinstance(meta.get("scalars"), dict) or not isinstance(name, str):
            raise TypeError("scalars must be a mapping and tensors a file name")
    except (KeyError, TypeError) as err:
        raise ValueError(f"{meta_path}: not a unetkit training state ({type(err).__name__}: {err})") from err
    tensor_path = meta_path.parent / name
    if Path(name).name != name or not name.startswith(f"{STATE_TENSORS}."):
        raise ValueError(f"{meta_path}: names tensors file {name!r}, expected {STATE_TENSORS}.<step> in the run folder")
    if not tensor_path.is_file():
        raise FileNotFoundError(f"{tensor_path} not found (named by {meta_path}); the run cannot be resumed")
    try:
        tensors = load_file(str(tensor_path))
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise ValueError(f"{tensor_path}: unreadable safetensors file ({err})") from err
    return meta, tensors


def _check_param_groups(meta_path: Path, groups: Any, optimizer: torch.optim.Optimizer) -> None:
    """``state.json``'s optimiser settings against the optimiser being restored: as many groups, every setting
    the optimiser has, each of the kind it holds now (a number, a flag, a list of numbers), numbers finite. Torch
    takes any value here and fails later, in the middle of training.

    Raises:
        ValueError: the first setting that does not fit, named with the file.
    """
    current = optimizer.state_dict()["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(current) or not all(isinstance(g, dict) for g in groups):
        raise ValueError(f"{meta_path}: param_groups must be {len(current)} mapping(s), as the optimiser has")
    for index, (saved, now) in enumerate(zip(groups, current, strict=True)):
        missing = sorted(set(now) - set(saved))
        if missing:
            raise ValueError(f"{meta_path}: param_groups[{index}] lacks {', '.join(missing[:5])}")
        for key, value in saved.items():
            if not _fits(value, now.get(key, 0.0)):
                raise ValueError(f"{meta_path}: param_groups[{index}].{key} is {str(value)[:40]!r}, which does not "
                                 f"fit the optimiser's {str(now.get(key, 'number'))[:40]!r}")


def _fits(value: Any, want: Any) -> bool:
    """Whether a setting read from JSON can stand where the optimiser holds ``want``."""
    import math

    if isinstance(want, (list, tuple)):
        return isinstance(value, list) and len(value) == len(want) and all(
            _fits(v, w) for v, w in zip(value, want, strict=True))
    if want is None or isinstance(want, bool):
        return value is None or isinstance(value, bool)
    if isinstance(want, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return math.isfinite(value) and (isinstance(want, float) or isinstance(value, int))
    return isinstance(value, type(want))


def _atomic(path: Path, write: Any) -> None:
    with atomic_path(path) as tmp:
        write(tmp)
