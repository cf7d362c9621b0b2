"""The predictor: normalise -> tiled (and optionally TTA'd) network -> probabilities -> labels.

It composes the small pure pieces (``tiling``, ``tta``, ``postprocess``) and nothing else.

Example:
    >>> predictor = Predictor.from_run("runs/isbi")
    >>> result = predictor(image)            # image: (C, H, W) raw intensities
    >>> result.labels.shape, result.probabilities.shape
    ((H, W), (K, H, W))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from unetkit.config import InferConfig, Plan
from unetkit.data.normalize import normalize
from unetkit.infer.fastpath import prepare_for_inference
from unetkit.models.base import load_model
from unetkit.train.precision import autocast


@dataclass
class Prediction:
    """``labels (*spatial)`` int64, ``probabilities (K, *spatial)`` float32, optional ``uncertainty (*spatial)``."""

    labels: np.ndarray
    probabilities: np.ndarray
    uncertainty: np.ndarray | None = None


class Predictor:
    """Predict any-size images with a trained model and its plan."""

    def __init__(
        self, model: torch.nn.Module, plan: Plan, *, device: str = "cpu", fast: bool = True, infer: InferConfig | None = None
    ) -> None:
        self.plan = plan
        self.infer = infer or plan.infer
        self.device = torch.device(device)
        self.spatial_dims = plan.data.spatial_dims
        self.model, self.amp_dtype, self.layout = prepare_for_inference(
            model, spatial_dims=self.spatial_dims, fast=fast, device=self.device
        )

    @classmethod
    def from_run(cls, run_dir: str | Path, *, checkpoint: str = "best", device: str = "cpu", fast: bool = True,
                 **infer_overrides: object) -> Predictor:
        """Load ``RUN/<checkpoint>`` and ``RUN/plan.yaml``; ``infer_overrides`` replace plan.infer fields (e.g. tta='d4')."""
        run_dir = Path(run_dir)
        plan = Plan.load(run_dir / "plan.yaml")
        infer = InferConfig(**{**plan.infer.__dict__, **infer_overrides})
        return cls(load_model(run_dir / checkpoint), plan, device=device, fast=fast, infer=infer)

    @torch.inference_mode()
    def probabilities(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``(probabilities (K, *spatial), uncertainty (*spatial) or None)`` for a raw ``(C, *spatial)`` image."""
        from unetkit.infer.tiling import sliding_window_predict

        self._check(image)
        x = torch.from_numpy(normalize(image, mode=self.plan.data.normalization))
        want_uncertainty = self.infer.tta != "none"
        out = sliding_window_predict(
            self._tile_fn(want_uncertainty),
            x,
            tile_size=tuple(self.infer.tile_size),
            overlap=self.infer.overlap,
            blend=self.infer.blend,
            batch_size=self.infer.batch_size,
        ).numpy()
        if want_uncertainty:
            return out[:-1], out[-1]
        return out, None

    def __call__(self, image: np.ndarray) -> Prediction:
        from unetkit.infer.postprocess import probabilities_to_labels, remove_small_components

        probs, uncertainty = self.probabilities(image)
        labels = probabilities_to_labels(probs, threshold=self.infer.threshold)
        if self.infer.min_size > 0:
            labels = remove_small_components(labels, min_size=self.infer.min_size)
        return Prediction(labels=labels, probabilities=probs, uncertainty=uncertainty)

    def _tile_fn(self, with_uncertainty: bool):  # type: ignore[no-untyped-def]
        """Tiles ``(B, C, *tile)`` -> ``(B, K[+1], *tile)``: probabilities (+ uncertainty channel under TTA)."""

        def network(batch: torch.Tensor) -> torch.Tensor:
            batch = batch.to(self.device)
            if self.layout is not None:
                batch = batch.contiguous(memory_format=self.layout)
            with autocast(self.device, self.amp_dtype):
                logits = self.model(batch)
            logits = logits.float()
            return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)

        if not with_uncertainty:
            return network
        from unetkit.infer.tta import make_tta_fn

        return make_tta_fn(network, level=self.infer.tta, spatial_dims=self.spatial_dims, uncertainty="variance")

    def _check(self, image: np.ndarray) -> None:
        expected = self.spatial_dims + 1
        if image.ndim != expected:
            raise ValueError(f"expected an image of shape (C, *spatial) with {expected} dims, got {image.shape}")
        channels = int(self.plan.model.kwargs.get("in_channels", image.shape[0]))
        if image.shape[0] != channels:
            raise ValueError(f"the model takes {channels} channel(s); the image has {image.shape[0]}")
