"""Ensembles: several trained models (e.g. the folds of a cross-validation) predicting as one.

Each model's class probabilities (after its own test-time augmentation) are averaged before the
threshold / argmax. The averaging happens per tile, inside one sliding window: Gaussian blending is a
weighted mean with the same weights for every model, so this equals averaging each model's whole-image
probabilities, at the cost of one tiling pass. With TTA the uncertainty is the models' mean TTA variance.

Example:
    >>> ensemble = EnsemblePredictor.from_runs(["runs/cv/fold_0", "runs/cv/fold_1"], tta="flips")
    >>> result = ensemble(image)     # the same Prediction as Predictor returns
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unetkit.config import InferConfig, Plan
from unetkit.infer.predictor import Prediction, Predictor, blended_probabilities, predict_on_own_grid
from unetkit.runtime.run import input_channels, output_classes

# Data options that change what a model sees or what its outputs mean; the others (where the data lies,
# how images are grouped for the split) may differ between ensemble members.
_SHARED_DATA_FIELDS = (
    "mask_threshold", "value_map", "colour_table", "ignore_colours", "ignore_index", "classes", "task",
    "in_channels", "spatial_dims", "normalization", "intensity_mean", "intensity_std", "background",
    "target_spacing",  # the members' probabilities are averaged on one grid
)  # fmt: skip


def resolve_runs(run: str | Path, extra: Sequence[str | Path] = ()) -> list[Path]:
    """The run directories of an ensemble: ``run`` (a run directory, a cross-validation folder whose
    ``fold_<i>`` runs all join, or a checkpoint folder carrying its plan) followed by the ``extra`` ones.

    Raises:
        FileNotFoundError: a path that is neither a run directory (with ``plan.yaml``), a model folder (with
            ``config.json``) nor a CV folder.
    """
    from unetkit.run_layout import fold_runs, is_model_dir, is_run_dir

    runs: list[Path] = []
    for item in [run, *extra]:
        path = Path(item)
        if is_run_dir(path) or is_model_dir(path):
            runs.append(path)
        elif folds := fold_runs(path):
            runs += folds
        else:
            raise FileNotFoundError(
                f"{path}: not a run directory (no plan.yaml), a model folder (no config.json) nor a "
                "cross-validation folder (no fold_*/plan.yaml)"
            )
    return runs


def load_predictor(
    runs: Sequence[str | Path],
    *,
    checkpoint: str = "best",
    device: str = "cpu",
    fast: bool = True,
    backend: str = "torch",
    **infer_overrides: Any,  # InferConfig fields, checked by Predictor.from_run
) -> Predictor | EnsemblePredictor:
    """A :class:`Predictor` for one run (on ``backend``, see :meth:`Predictor.from_run`), an
    :class:`EnsemblePredictor` for several (torch: the members' probabilities are averaged per tile)."""
    if len(runs) == 1:
        return Predictor.from_run(runs[0], checkpoint=checkpoint, device=device, fast=fast, backend=backend,
                                  **infer_overrides)
    return EnsemblePredictor.from_runs(
        runs, checkpoint=checkpoint, device=device, fast=fast, **infer_overrides
    )


class EnsemblePredictor:
    """Average the class probabilities of several :class:`Predictor` members; called like a Predictor.

    The ensemble tiles with the first member's inference settings (tile size, overlap, blending,
    threshold, minimum size, TTA); members keep their own network and plan.
    """

    def __init__(self, members: Sequence[Predictor]) -> None:
        """Check that the members can be averaged.

        Raises:
            ValueError: fewer than two members, or members whose plans disagree on data options, classes,
                input channels or test-time augmentation (names the first member that differs and how).
        """
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least two models, got {len(members)}")
        first = members[0]
        for i, member in enumerate(members[1:], start=1):
            problem = _mismatch(first, member)
            if problem:
                raise ValueError(f"ensemble member {i} does not match member 0: {problem}")
        self.members = list(members)
        self.plan: Plan = first.plan
        self.infer: InferConfig = first.infer
        self.spatial_dims = first.spatial_dims
        self.backend = "torch"

    @classmethod
    def from_runs(
        cls,
        runs: Sequence[str | Path],
        *,
        checkpoint: str = "best",
        device: str = "cpu",
        fast: bool = True,
        **infer_overrides: Any,  # InferConfig fields, checked by Predictor.from_run
    ) -> EnsemblePredictor:
        """Load every run's checkpoint and plan; all members infer with the first run's settings plus
        ``infer_overrides`` (as :meth:`Predictor.from_run`).

        Raises:
            FileNotFoundError: a missing plan or checkpoint.
            ValueError: an unknown inference setting, or runs that do not match (see ``__init__``).
        """
        from unetkit.models.base import load_model
        from unetkit.run_layout import load_run_plan, weights_dir

        lead = Predictor.from_run(runs[0], checkpoint=checkpoint, device=device, fast=fast, **infer_overrides)
        members = [lead]
        for run in runs[1:]:
            plan = load_run_plan(run)
            model = load_model(weights_dir(run, checkpoint))
            # Shared settings come from the first run; each run keeps the alignment its own training found.
            infer = dataclasses.replace(lead.infer, shift=list(plan.infer.shift))
            members.append(Predictor(model, plan, device=device, fast=fast, infer=infer))
        return cls(members)

    @property
    def with_uncertainty(self) -> bool:
        return self.members[0].with_uncertainty

    def describe(self) -> str:
        """One line: the members' backend and precision (see :meth:`Predictor.describe`)."""
        return self.members[0].describe()

    @property
    def precision(self):  # type: ignore[no-untyped-def]
        """The first member's :class:`~unetkit.precision.PrecisionChoice` (all members are built alike)."""
        return self.members[0].precision

    def tile_fn(self):  # type: ignore[no-untyped-def]
        """Tiles ``(B, C, *tile)`` -> the members' mean output ``(B, K[+1], *tile)`` (see Predictor.tile_fn)."""
        fns = [m.tile_fn() for m in self.members]

        def mean_of_members(batch: torch.Tensor) -> torch.Tensor:
            total = fns[0](batch).float()
            for fn in fns[1:]:
                total = total + fn(batch).float().to(total.device)
            return total / len(fns)

        return mean_of_members

    @torch.inference_mode()
    def probabilities(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``(mean probabilities (K, *spatial), mean TTA variance (*spatial) or None)`` for a raw image."""
        self.members[0]._check(image)
        return blended_probabilities(self.tile_fn(), image, self.plan, self.infer, uncertainty=self.with_uncertainty)

    def __call__(self, image: np.ndarray, *, spacing: Sequence[float] | None = None) -> Prediction:
        """As :meth:`unetkit.infer.predictor.Predictor.__call__`: on the image's own grid."""
        return predict_on_own_grid(self.probabilities, image, self.plan, self.infer, spacing=spacing)


def _mismatch(a: Predictor, b: Predictor) -> str | None:
    """How member ``b`` differs from ``a`` in what must be shared, or None."""
    for name in _SHARED_DATA_FIELDS:
        va, vb = getattr(a.plan.data, name), getattr(b.plan.data, name)
        if va != vb:
            return f"data option {name} is {vb!r}, not {va!r}"
    for name, read in (("classes", output_classes), ("in_channels", input_channels)):
        va, vb = read(a.plan), read(b.plan)  # as the models are built
        if va != vb:
            return f"model {name} is {vb!r}, not {va!r}"
    if a.with_uncertainty != b.with_uncertainty:
        return f"test-time augmentation is {b.infer.tta!r}, not {a.infer.tta!r}"
    return None
