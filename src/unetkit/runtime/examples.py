"""Labelled images held in memory, and the run's split of them (training, the int8 check and alignment share these)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from unetkit.runtime.run import run_split

if TYPE_CHECKING:
    from unetkit.config import Plan


@dataclass
class Example:
    """One labelled image held in memory: normalised ``image (C, *spatial)`` float32 and ``mask`` int64."""

    key: str
    image: np.ndarray
    mask: np.ndarray


def labelled_example(key: str, image: np.ndarray, mask: np.ndarray | None) -> Example:
    """An :class:`Example`; ``mask`` None (an unlabelled sample) is an error naming the sample.

    Raises:
        ValueError: ``mask`` is None.
    """
    if mask is None:
        raise ValueError(f"{key}: no mask; training and validation need a mask for every image")
    return Example(key=key, image=image, mask=mask)


def split_examples(
    examples: Sequence[Example], groups: Sequence[str], *, plan: Plan, labelled: bool = True
) -> tuple[list[Example], list[Example]]:
    """The run's training and validation examples (:func:`unetkit.runtime.run.run_split` on their keys).

    Related images (same group) never straddle the split; with ``plan.train.folds`` (k >= 2) the validation
    part is fold ``plan.train.fold``, else about ``plan.train.val_fraction`` of the images is held back.

    Args:
        examples: the samples, in discovery order.
        groups: each example's group.
        plan: the run's plan (its ``train`` section says how to split).
        labelled: False keeps the whole training side instead of the ``train --labels`` subset.

    Returns:
        ``(train, val)`` examples.

    Raises:
        ValueError: ``folds`` is 1 or negative, ``fold`` outside ``0..folds-1``, fewer groups than folds, or
            a labelled subset that does not fit the training side.
    """
    split = run_split(plan, [e.key for e in examples], list(groups), labelled=labelled)
    by_key = {e.key: e for e in examples}
    return [by_key[k] for k in split.train], [by_key[k] for k in split.val]


__all__ = ["Example", "labelled_example", "split_examples"]
