"""Typed configuration: a plan is data + model + train + infer, saved as YAML/JSON with every run.

A run directory written by ``unetkit train`` has this layout (the contract inference relies on)::

    RUN/plan.yaml                      the full Plan (what was trained, how to preprocess, how to infer)
    RUN/best/config.json + model.safetensors     best validation checkpoint (``unetkit.load_model``)
    RUN/last/config.json + model.safetensors     last checkpoint
    RUN/state.json + RUN/state.safetensors       optimiser/scheduler/step/RNG state for --resume
    RUN/metrics.csv, RUN/curve.png, RUN/overlays/
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from unetkit._io import write_text_atomic
from unetkit.data.options import DataConfig

if TYPE_CHECKING:
    from unetkit.model_config import SegModelConfig

PLAN_FORMAT_VERSION = 1


@dataclass
class ModelConfig:
    """Which registered model to build and with which keyword arguments (``create_model(name, **kwargs)``).

    Attributes:
        name: registered model name (``unet``, ``unetplusplus``, ``attention_unet``, ``diffusion_unet``; see
            ``unetkit.list_models()``).
        kwargs: the model's options (for the built-in U-Nets the fields of
            :class:`unetkit.model_config.SegModelConfig`), checked against its typed config when the plan is read.
        reason: why the planner chose this model and encoder, in words (informational; empty for hand-written plans).
    """

    name: str = "unet"
    kwargs: dict[str, Any] = field(default_factory=dict)
    # Why the planner chose this model and encoder, in words (informational; empty for hand-written plans).
    reason: str = ""

    def typed(self) -> SegModelConfig | None:
        """``kwargs`` as the built-in model's typed config (:mod:`unetkit.model_config`: its options and
        defaults); None for other registered models (the diffusion U-Net, a user's own), whose constructors
        check their arguments.

        Raises:
            ValueError: an option the model does not have, or a value of the wrong type, named as
                ``model.kwargs.<option>``.
        """
        from unetkit.model_config import MODEL_CONFIGS

        config_class = MODEL_CONFIGS.get(self.name)
        if config_class is None:
            return None
        names = {f.name for f in dataclasses.fields(config_class)}
        unknown = sorted(str(k) for k in set(self.kwargs) - names)
        if unknown:
            raise ValueError(f"model.kwargs.{unknown[0]}: model {self.name!r} has no such option; valid: "
                             f"{', '.join(sorted(names))}")
        return config_class(**_typed_values(config_class, self.kwargs, "model.kwargs"))


@dataclass
class TrainConfig:
    """How a run trains: patches, optimiser, schedule, budget, validation and the labelled subset.

    Attributes:
        patch_size: side lengths of the random training patches, one per spatial axis (pixels or voxels).
        batch_size: patches per optimiser step (per process under ``torchrun``).
        optimizer: ``adamw`` or ``sgd`` (Nesterov, momentum 0.99).
        lr: peak learning rate of the decoder and head (and of the encoder when ``encoder_lr_scale`` is 1).
        encoder_lr_scale: the encoder learns at ``lr * encoder_lr_scale``; below 1 keeps a pretrained encoder's
            features (the planner writes 0.333 with the ImageNet encoder).
        weight_decay: the optimiser's weight decay.
        schedule: learning-rate schedule after warm-up: ``cosine``, ``poly`` or ``constant``.
        warmup_steps: steps of linear warm-up from 0 to ``lr``.
        steps: number of optimiser steps when no time budget is given (an upper bound otherwise).
        time_budget_s: wall-clock budget of the training in seconds (``--time-budget``); it is turned into a step
            count after a short calibration and re-estimated after each evaluation. None = train ``steps`` steps.
        loss: ``dice_ce`` (default), ``dice``, ``ce``, ``focal``, ``tversky``, ``focal_tversky``, ``dice_focal``,
            ``skeleton_recall`` or ``dice_ce_skeleton``.
        augmentation: preset of paired augmentations: ``default``, ``microscopy``, ``medical``, ``aerial``,
            ``industrial`` or ``none`` (the planner picks one from the data).
        foreground_fraction: share of patches centred on a foreground pixel (the rest are drawn uniformly).
        grad_clip: largest gradient norm (0 = no clipping).
        ema: decay of an exponential moving average of the weights (e.g. 0.99; warmed up), or None for none.
        precision: ``auto`` (bf16 autocast only where the CPU has native bf16, fp16 on CUDA), ``fp32``, ``bf16``
            or ``fp16`` (CUDA).
        workers: batch-building worker processes; 0 builds batches in the training process (the CPU default: a
            worker would take the cores the model uses).
        val_every: steps between evaluations on the validation part (0 = about eight evaluations per run).
        val_fraction: share of the training images (by group) held back for validation.
        folds: k of a group-aware k-fold split (0 = off: one ``val_fraction`` split).
        fold: which fold is the validation part when ``folds >= 2``.
        early_stop_patience: stop after this many evaluations without improvement (None = never).
        align: after training, move predictions by the sub-pixel shift that best fits the validation labels if
            it wins clearly (written to ``infer.shift``; see ``unetkit.runtime.alignment``).
        seed: seed of the initialisation, the split and the batches (the batch of step s is a pure function of
            the seed and s).
        labels: train on this many cases of the training side, drawn with ``labels_seed`` (0 = all); the
            validation part is split first, so it is the same whatever the subset.
        labels_seed: seed of the ``labels`` draw (nested: the first 20 of seed s are among its first 40).
        labels_keys: exactly these training cases (``train --labels-file``); overrides ``labels``.
        unlabelled: folders of images without masks for semi-supervised training (``train --unlabelled``; see
            ``unetkit.train.semisup``); a mean teacher (the EMA) labels their patches.
        unlabelled_threshold: the teacher's confidence a pixel needs to count in the unsupervised term.
        unlabelled_weight: weight of the unsupervised term once ramped up.
        unlabelled_rampup: fraction of the steps over which that weight ramps up from 0.
        unlabelled_batch_size: unlabelled patches per step (0 = ``batch_size``).
        unlabelled_skipped: files of the unlabelled folders that are images of the labelled set (same path or
            same bytes), reported and not used.
    """

    patch_size: list[int] = field(default_factory=lambda: [256, 256])
    batch_size: int = 4
    optimizer: str = "adamw"
    lr: float = 1e-3
    # The encoder's learning rate is lr * encoder_lr_scale (below 1 keeps a pretrained encoder's features).
    encoder_lr_scale: float = 1.0
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    warmup_steps: int = 50
    steps: int = 2000
    time_budget_s: float | None = None
    loss: str = "dice_ce"
    augmentation: str = "default"
    foreground_fraction: float = 0.33
    grad_clip: float = 12.0
    ema: float | None = None
    precision: str = "auto"
    workers: int = 0  # batch-building worker processes; 0 = in the training process (see train/prefetch.py)
    val_every: int = 200
    val_fraction: float = 0.2
    # k-fold cross-validation: with folds >= 2 the validation part is fold `fold` of a group-aware k-fold
    # split (val_fraction is then unused); 0 = off, a single val_fraction split.
    folds: int = 0
    fold: int = 0
    early_stop_patience: int | None = None  # in evaluations without improvement
    # After training, move predictions by the sub-pixel shift that best fits the validation labels, if one
    # wins clearly (unetkit.runtime.alignment); the result is written to infer.shift.
    align: bool = True
    seed: int = 0
    # Train on a subset of the training side only (the validation part is split first, so it is the same
    # whatever the subset; see unetkit.data.splits.choose_labelled): `labels_keys` names the samples
    # exactly (`train --labels-file`), else `labels` > 0 draws that many with `labels_seed`; 0 = all.
    labels: int = 0
    labels_seed: int = 0
    labels_keys: list[str] = field(default_factory=list)
    # Semi-supervised training (`train --unlabelled`, see unetkit.train.semisup): folders of images without masks
    # (resolved paths); a mean teacher (the EMA, train.ema) labels their patches and the model learns those labels
    # under strong augmentation where the teacher's confidence is at least `unlabelled_threshold`, with weight
    # `unlabelled_weight` ramped up over the first `unlabelled_rampup` of the steps. `unlabelled_batch_size` 0 =
    # batch_size. `unlabelled_skipped`: files of those folders that are images of the labelled set (same path or
    # same bytes), reported and not used.
    unlabelled: list[str] = field(default_factory=list)
    unlabelled_threshold: float = 0.9
    unlabelled_weight: float = 1.0
    unlabelled_rampup: float = 0.3
    unlabelled_batch_size: int = 0
    unlabelled_skipped: list[str] = field(default_factory=list)


@dataclass
class InferConfig:
    """How a run predicts: the sliding window, test-time augmentation, thresholds and precision.

    Attributes:
        tile_size: side lengths of the sliding window, one per spatial axis.
        overlap: fraction by which neighbouring tiles overlap, in [0, 1).
        blend: how overlapping tiles are merged: ``gaussian`` (centre-weighted) or ``constant``.
        tta: test-time augmentation: ``none`` (1 pass), ``flips`` (4 in 2D, 8 in 3D), ``d4`` (8) or
            ``d4+scales`` (24).
        batch_size: tiles per forward pass.
        threshold: foreground probability above which a pixel is foreground (binary tasks).
        min_size: predicted connected components smaller than this many pixels are removed (0 = keep all).
        precision: ``auto`` | ``fp32`` | ``bf16`` (| ``fp16`` on CUDA) for the torch fast path: auto = bf16 only
            where it is native (``unetkit.precision.choose_precision``); fp32 for exact comparisons.
        shift: pixels to move the probabilities by, per spatial axis (``[]`` = none); set by training's
            alignment step.
        max_pass_pixels: inference tiles chosen for speed (``unetkit.runtime.tiling.pass_tiles``): an image of up
            to this many pixels (voxels) goes through the network in one pass, larger ones in tiles of up to this
            size; null = auto (2D: 1024 x 1024, 3D: ``tile_size``); 0 = always ``tile_size``.
    """

    tile_size: list[int] = field(default_factory=lambda: [256, 256])
    overlap: float = 0.5
    blend: str = "gaussian"
    tta: str = "none"
    batch_size: int = 4
    threshold: float = 0.5
    min_size: int = 0
    # auto | fp32 | bf16 (| fp16 on CUDA) for the torch fast path: auto = bf16 only where it is native
    # (unetkit.precision.choose_precision); fp32 for exact comparisons.
    precision: str = "auto"
    # Pixels to move the probabilities by, per spatial axis ([] = none); set by training's alignment step.
    shift: list[float] = field(default_factory=list)
    # Inference tiles chosen for speed (unetkit.runtime.tiling.pass_tiles): an image of up to this many pixels
    # (voxels) goes through the network in one pass, and larger ones in tiles of up to this size; null = auto
    # (2D: 1024 x 1024, 3D: the tile_size above); 0 = always tile_size (the training patch).
    max_pass_pixels: int | None = None



def _check_choices(plan: Plan) -> None:
    """The plan's choice fields against the one list of each (:mod:`unetkit.choices`), named as ``section.field``.

    Raises:
        ValueError: a value outside its list.
    """
    from unetkit.choices import LOSS_NAMES, PRECISIONS, TTA_LEVELS

    for name, value, valid in (("train.loss", plan.train.loss, LOSS_NAMES),
                               ("train.precision", plan.train.precision, PRECISIONS),
                               ("infer.precision", plan.infer.precision, PRECISIONS),
                               ("infer.tta", plan.infer.tta, TTA_LEVELS)):  # fmt: skip
        if value not in valid:
            raise ValueError(f"{name}: unknown {value!r}; valid: {', '.join(valid)}")

@dataclass
class Plan:
    """Everything a run needs: how to read the data, which model, how to train, how to predict.

    ``unetkit plan`` writes one from a dataset's fingerprint; ``unetkit train`` saves it as ``RUN/plan.yaml``;
    ``--set section.field=value`` changes one field (:func:`apply_overrides`).

    Attributes:
        data: how the dataset's files become images and masks (:class:`unetkit.data.options.DataConfig`).
        model: which model and its options.
        train: how to train.
        infer: how to predict.
        format_version: version of the plan format (a newer one than this unetkit understands is refused).
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    format_version: int = PLAN_FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Plan:
        version = raw.get("format_version", PLAN_FORMAT_VERSION)
        if not isinstance(version, int) or isinstance(version, bool):
            raise ValueError(f"format_version: expected an integer, got {_short(version)}")
        if version > PLAN_FORMAT_VERSION:
            raise ValueError(f"plan format {version} is newer than this unetkit understands ({PLAN_FORMAT_VERSION})")
        sections = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "infer": InferConfig}
        for name in sections:
            if not isinstance(raw.get(name, {}), dict):
                raise ValueError(f"plan section {name!r} must be a mapping, got {type(raw[name]).__name__}")
        plan = cls(**{name: _build(section, raw.get(name, {}), name) for name, section in sections.items()})
        plan.model.typed()  # the model's options against its typed config
        _check_choices(plan)
        return plan

    def save(self, path: str | Path) -> None:
        """Write YAML (or JSON for a ``.json`` suffix) atomically."""
        path = Path(path)
        text = (
            json.dumps(self.to_dict(), indent=2)
            if path.suffix == ".json"
            else yaml.safe_dump(self.to_dict(), sort_keys=False)
        )
        write_text_atomic(path, text)

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        """Read a plan written by :meth:`save` (or by hand, or by someone else: see :data:`PLAN_LIMITS`).

        JSON for a ``.json`` suffix, else YAML (safe tags only; anchors/aliases within a small expansion bound).

        Raises:
            FileNotFoundError: no such file.
            ValueError: too large, not UTF-8, not YAML/JSON, aliases expanding beyond the bound, nested too deeply,
                not a mapping, or a field that does not fit its type or bounds; one line starting with the path.
        """
        from unetkit.untrusted import load_json_limited, load_yaml_limited

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such plan file")
        load = load_json_limited if path.suffix == ".json" else load_yaml_limited
        raw = load(path, what="plan", max_bytes=PLAN_LIMITS["max_bytes"], max_depth=PLAN_LIMITS["max_depth"])
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: not a plan (expected a mapping, got {type(raw).__name__})")
        try:
            return cls.from_dict(raw)
        except (ValueError, TypeError) as err:
            raise ValueError(f"{path}: {err}") from err


# What a plan file may be (Plan.load): a plan is a few KiB; `labels_keys` can list many thousand sample names.
# Nesting: the deepest plan field (data.colour_table: {name: [r, g, b]}) sits 4 levels down.
PLAN_LIMITS = {"max_bytes": 8 * 2**20, "max_depth": 16}
# Integers in a plan or a model config beyond this are refused (no size, count or index comes near; torch and
# numpy overflow past 2**63).
MAX_PLAN_INT = 2**53


T = TypeVar("T")


# Fields that earlier versions wrote and this one no longer has: dropped on load so old plans keep loading.
RETIRED_FIELDS = {"TrainConfig": {"num_workers"}}


def _at_least(low: float) -> tuple[Any, str]:
    return (lambda v: v >= low), f"at least {low:g}"


def _fraction(*, top: bool) -> tuple[Any, str]:
    return (lambda v: 0 <= v <= 1 if top else 0 <= v < 1), f"in [0, 1{']' if top else ')'}"


# Bounds of the numeric fields whose values outside them only fail later (or train nonsense): checked with the
# types, so `--set train.batch_size=-4` stops before any data is read. None (where a field allows it) is not checked.
BOUNDS: dict[str, tuple[Any, str]] = {
    "train.batch_size": _at_least(1), "train.steps": _at_least(0), "train.warmup_steps": _at_least(0),
    "train.val_every": _at_least(0), "train.workers": _at_least(0), "train.folds": _at_least(0),
    "train.fold": _at_least(0), "train.weight_decay": _at_least(0), "train.grad_clip": _at_least(0),
    "train.encoder_lr_scale": _at_least(0), "train.val_fraction": _fraction(top=False),
    "train.foreground_fraction": _fraction(top=True), "train.lr": ((lambda v: v > 0), "positive"),
    "train.time_budget_s": ((lambda v: v > 0), "positive"), "infer.batch_size": _at_least(1),
    "train.unlabelled_threshold": _fraction(top=True), "train.unlabelled_weight": _at_least(0),
    "train.unlabelled_rampup": _fraction(top=True), "train.unlabelled_batch_size": _at_least(0),
    "infer.min_size": _at_least(0), "infer.overlap": _fraction(top=False), "infer.threshold": _fraction(top=True),
    "infer.max_pass_pixels": _at_least(0),
}


def _build(cls: type[T], raw: dict[str, Any], section: str) -> T:
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    raw = {k: v for k, v in raw.items() if k not in RETIRED_FIELDS.get(cls.__name__, set())}
    unknown = sorted(str(k) for k in set(raw) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
    raw = _typed_values(cls, raw, section)
    for key, value in raw.items():
        check, wanted = BOUNDS.get(f"{section}.{key}", (None, ""))
        if check is not None and value is not None and not check(value):
            raise ValueError(f"{section}.{key}: must be {wanted}, got {value!r}")
    return cls(**raw)


def _typed_values(cls: type, raw: dict[str, Any], section: str) -> dict[str, Any]:
    """``raw`` (known field names only) with JSON's string keys restored, every value checked against the field's
    declared type; a mismatch is named ``section.field``."""
    hints = typing.get_type_hints(cls)
    raw = {k: _json_keys(v, hints[k]) for k, v in raw.items()}
    for key, value in raw.items():
        if not _matches(value, hints[key]):
            raise ValueError(f"{section}.{key}: expected {_type_name(hints[key])}, got {_short(value)} "
                             f"({type(value).__name__})")
        bad = _unusable_number(value)
        if bad is not None:
            raise ValueError(f"{section}.{key}{bad[0]}: {bad[1]}")
    return raw


def _unusable_number(value: Any) -> tuple[str, str] | None:
    """``(where, why)`` for the first number inside ``value`` (a field's value, lists and mappings included) that
    cannot be used, or None: NaN and infinities, and integers beyond ``MAX_PLAN_INT``. ``where`` is the path below
    the field (``""``, ``"[0]"``, ``".dropout"``). Iterative: plan values nest a few levels only."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, dict):
            stack.extend((f"{where}.{k}", v) for k, v in item.items())
            stack.extend((f"{where} (a key)", k) for k in item)
        elif isinstance(item, (list, tuple)):
            stack.extend((f"{where}[{i}]", v) for i, v in enumerate(item))
        elif isinstance(item, float) and not math.isfinite(item):
            return where, f"must be a finite number, got {item!r}"
        elif isinstance(item, int) and not isinstance(item, bool) and abs(item) > MAX_PLAN_INT:
            shown = item if item.bit_length() <= 64 else f"of {item.bit_length()} bits"
            return where, f"integer {shown} is out of range (beyond +-2**53)"
    return None


def _short(value: Any) -> str:
    """``repr(value)``, cut to 80 characters (a hostile value may be megabytes long)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"  # repr() itself refuses past 4300 digits
    text = repr(value) if not isinstance(value, (list, dict)) or len(value) < 100 else f"a {type(value).__name__}"
    return text if len(text) <= 80 else f"{text[:77]}..."


def _json_keys(value: Any, hint: Any) -> Any:
    """JSON writes every mapping key as a string: ``{"255": 0}`` back to ``{255: 0}`` for ``dict[int, ...]``."""
    if not isinstance(value, dict) or not value or not all(isinstance(k, str) for k in value):
        return value
    options = typing.get_args(hint) if typing.get_origin(hint) in (types.UnionType, typing.Union) else (hint,)
    if any(typing.get_origin(o) is dict and typing.get_args(o)[:1] == (int,) for o in options):
        if all(re.fullmatch(r"[+-]?\d+", k) for k in value):
            return {int(k): v for k, v in value.items()}
    return value


def _matches(value: Any, hint: Any) -> bool:
    """Whether a value read from YAML/JSON fits a field's declared type (ints count as floats; bools are no numbers)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (types.UnionType, typing.Union):
        return any(_matches(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is list:
        return isinstance(value, (list, tuple)) and all(_matches(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(_matches(k, args[0]) and _matches(v, args[1]) for k, v in value.items())
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "") if typing.get_origin(hint) else getattr(hint, "__name__", str(hint))


def apply_overrides(plan: Plan, overrides: list[str]) -> Plan:
    """Apply ``section.field=value`` overrides (value parsed as YAML), e.g. ``train.lr=3e-4``."""
    raw = plan.to_dict()
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ValueError(f"override {item!r} must look like section.field=value (e.g. train.lr=3e-4)")
        key, value = item.split("=", 1)
        section, name = key.split(".", 1)
        if section not in raw or not isinstance(raw[section], dict):
            raise ValueError(f"unknown plan section {section!r}; valid: data, model, train, infer")
        target = raw[section]
        *parents, leaf = name.split(".")
        for p in parents:
            target = target.setdefault(p, {})
        target[leaf] = _parse_value(value)
    return Plan.from_dict(raw)


_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _parse_value(text: str) -> Any:
    """YAML scalars, except that ``3e-4`` is a number (YAML 1.1 would read it as a string)."""
    if _NUMBER.match(text.strip()):
        number = float(text)
        return int(number) if number.is_integer() and not any(c in text for c in ".eE") else number
    return yaml.safe_load(text)


def parse_duration(text: str) -> float:
    """Seconds in a duration written ``90``, ``90s``, ``5m`` or ``1.5h`` (used by ``--time-budget``).

    Raises:
        ValueError: anything else, or a duration that is not positive.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", str(text).lower())
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"cannot read duration {text!r}; use e.g. 90s, 5m or 1h")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]
