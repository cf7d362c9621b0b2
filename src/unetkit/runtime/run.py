"""A run as the stages see it: its model's options, read through the typed model config, and its split.

Every stage that needs a run's input channels or classes asks here, so a plan that leaves an option out gets
the same value everywhere: the built-in models' dataclass default (:mod:`unetkit.model_config`), which is
what ``create_model(name, **kwargs)`` built. A model without a typed config (the diffusion U-Net, a user's
own registered model) falls back to its keyword arguments and then to the plan's data.

The run's split (:func:`run_split`) is the one function that says which images a run trained and validated
on; training, the int8 check, active learning and the semi-supervised step all call it.

Example:
    >>> plan = Plan(model=ModelConfig("unet", {"in_channels": 3, "classes": 1}))  # doctest: +SKIP
    >>> input_channels(plan), output_classes(plan), label_classes(plan)  # doctest: +SKIP
    (3, 1, 2)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from unetkit.data.splits import LabelledSubset, Split, training_split
from unetkit.model_config import untyped_option

if TYPE_CHECKING:
    from unetkit.config import Plan


def input_channels(plan: Plan, *, fallback: int | None = None) -> int:
    """The image channels the run's model takes.

    Args:
        plan: the run's plan.
        fallback: for a model without a typed config that does not name ``in_channels``: this value
            (default: ``plan.data.in_channels``).

    Returns:
        The number of input channels.

    Raises:
        ValueError: the plan's model options do not fit the model's typed config.
    """
    typed = plan.model.typed()
    if typed is not None:
        return int(typed.in_channels)
    default = plan.data.in_channels if fallback is None else fallback
    return int(untyped_option(plan.model.kwargs, "in_channels", default))


def output_classes(plan: Plan) -> int:
    """The output channels (logits) of the run's model: 1 for a sigmoid binary model.

    Raises:
        ValueError: the plan's model options do not fit the model's typed config.
    """
    typed = plan.model.typed()
    return int(typed.classes if typed is not None else untyped_option(plan.model.kwargs, "classes", 2))


def label_classes(plan: Plan) -> int:
    """The classes of the run's label maps: :func:`output_classes`, but at least 2 (one sigmoid channel is a
    two-class label map, 0 / 1, once thresholded).

    Raises:
        ValueError: the plan's model options do not fit the model's typed config.
    """
    return max(output_classes(plan), 2)


def encoder_name(plan: Plan) -> str:
    """The run's encoder (``plain`` or a timm backbone name).

    Raises:
        ValueError: the plan's model options do not fit the model's typed config.
    """
    typed = plan.model.typed()
    return str(typed.encoder if typed is not None else untyped_option(plan.model.kwargs, "encoder", "plain"))


def run_split(plan: Plan, keys: Sequence[str], groups: Sequence[str] | None, *, fold: int | None = None,
              labelled: bool = True) -> Split:
    """The run's training and validation keys, exactly as training split them.

    Same split function and arguments as training: ``plan.train.val_fraction`` / ``folds`` / ``fold`` /
    ``seed`` and the labelled subset (``train --labels``), which only narrows the training side.

    Args:
        plan: the run's plan.
        keys: the samples' keys, in discovery order.
        groups: the samples' groups (related images never straddle the split), or None.
        fold: another fold than ``plan.train.fold`` (cross-validation scoring).
        labelled: False keeps the whole training side (the validation part is the same either way).

    Returns:
        :class:`unetkit.data.splits.Split` ``(train, val)`` of keys.

    Raises:
        ValueError: as :func:`unetkit.data.splits.training_split`.
    """
    cfg = plan.train
    subset = LabelledSubset.of(cfg) if labelled else LabelledSubset()
    return training_split(keys, groups, val_fraction=cfg.val_fraction, seed=cfg.seed, folds=cfg.folds,
                          fold=cfg.fold if fold is None else fold, labelled=subset)


__all__ = ["encoder_name", "input_channels", "label_classes", "output_classes", "run_split"]
