"""Everything the loop needs, built from the plan: data (checked, split, normalised), model, optimiser."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from unetkit.data.normalize import normalize_for
from unetkit.data.options import DataConfig
from unetkit.runtime.examples import Example, labelled_example

if TYPE_CHECKING:
    from unetkit.data.dataset import LoadedSample


class DatasetError(ValueError):
    """The dataset failed its checks; training did not start."""


def prepare_run_dir(run_dir: Path, *, resume: bool, overwrite: bool, marker: str | None = "state.json") -> Path:
    """Create the run folder; refuse to touch an existing run unless resuming or ``overwrite``.

    ``marker``: the file a resumable folder must hold (a run's ``state.json``); None: the folder itself
    (a cross-validation parent, whose folds check their own state).
    """
    run_dir = Path(run_dir)
    if resume:
        if marker is None and not run_dir.is_dir():
            raise FileNotFoundError(f"cannot resume: {run_dir} does not exist")
        if marker is not None and not (run_dir / marker).is_file():
            raise FileNotFoundError(f"cannot resume: {run_dir}/{marker} not found")
        return run_dir
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{run_dir} already exists and is not empty; pass --overwrite or --resume")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def load_examples(data: DataConfig, *, loaded: list[LoadedSample] | None = None) -> tuple[list[Example], list[str]]:
    """Check the dataset, then load every labelled pair (normalised image, class-index mask) and its group.

    ``loaded``: the samples of a passed check (``check_dataset(..., keep=True).samples``, read with the same
    reading options as ``data``, see :func:`unetkit.data.options.same_reading`) instead of reading the files
    again. The list is emptied as its samples become examples, so the dataset is held once, not twice.

    Raises:
        DatasetError: the checks found errors (corrupt image, size mismatch, empty folder ...).
    """
    from unetkit.data.resample import to_target_spacing

    if loaded is None:
        loaded = checked_samples(data)
    loaded.reverse()  # popped from the end: the examples keep the dataset's order
    examples, groups = [], []
    while loaded:
        s = loaded.pop()
        # Volumes are resampled to the plan's target spacing (a no-op for those already at it).
        try:
            image, mask = to_target_spacing(s.image, s.mask, spacing=s.meta.get("spacing"), target=data.target_spacing)
        except ValueError as err:
            raise DatasetError(f"{s.meta.get('image_files', [s.key])[0]}: {err}") from err
        examples.append(labelled_example(s.key, normalize_for(image, data), mask))
        groups.append(s.group)
    return examples, groups


def checked_samples(data: DataConfig) -> list[LoadedSample]:
    """Every sample of ``data``, read once by the dataset check.

    Raises:
        DatasetError: the checks found errors (corrupt image, size mismatch, empty folder ...).
    """
    from unetkit.data.checks import check_dataset

    report = check_dataset(data, keep=True)
    if report.has_errors:
        raise DatasetError(
            f"dataset check failed; fix these before training:\n{report.to_text(errors_only=True)}"
        )
    return report.samples


def build_optimizer(
    model: torch.nn.Module, *, name: str, lr: float, weight_decay: float, encoder_lr_scale: float = 1.0
) -> torch.optim.Optimizer:
    """AdamW or SGD (Nesterov, momentum 0.99) over the trainable parameters.

    With ``encoder_lr_scale != 1`` and a model that has an ``encoder``, the encoder's parameters form a
    second group whose learning rate is ``lr * encoder_lr_scale`` (a pretrained encoder needs smaller steps
    than a freshly initialised decoder). Every group records its factor as ``lr_scale``; the training loop
    sets ``group["lr"] = schedule_lr * group["lr_scale"]``.
    """
    if encoder_lr_scale <= 0:
        raise ValueError(f"encoder_lr_scale must be positive, got {encoder_lr_scale}")
    trainable = [p for p in model.parameters() if p.requires_grad]
    encoder = getattr(model, "encoder", None)
    groups: list[dict[str, Any]]
    if encoder_lr_scale != 1.0 and isinstance(encoder, torch.nn.Module):
        in_encoder = {id(p) for p in encoder.parameters()}
        groups = [
            {"params": [p for p in trainable if id(p) not in in_encoder], "lr_scale": 1.0},
            {"params": [p for p in trainable if id(p) in in_encoder], "lr_scale": encoder_lr_scale},
        ]
        groups = [g for g in groups if g["params"]]
    else:
        groups = [{"params": trainable, "lr_scale": 1.0}]
    for group in groups:
        group["lr"] = lr * group["lr_scale"]
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.99, nesterov=True, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose adamw or sgd")
