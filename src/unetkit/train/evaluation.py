"""Whole-image prediction and scoring used by validation and ``unetkit evaluate``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from unetkit.precision import autocast


@torch.inference_mode()
def predict_probabilities(
    model: torch.nn.Module,
    image: np.ndarray,
    *,
    tile_size: tuple[int, ...],
    overlap: float = 0.25,
    batch_size: int = 4,
    amp_dtype: torch.dtype | None = None,
    memory_format: torch.memory_format | None = None,
) -> np.ndarray:
    """Class probabilities ``(K, *spatial)`` for a normalised ``image (C, *spatial)`` by Gaussian-blended tiles."""
    from unetkit.runtime.tiling import TileSettings, sliding_window_predict

    device = next(model.parameters()).device

    def forward(batch: torch.Tensor) -> torch.Tensor:
        if memory_format is not None:
            batch = batch.contiguous(memory_format=memory_format)
        with autocast(device, amp_dtype):
            logits = model(batch.to(device))
        logits = logits.float()
        return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)

    was_training = model.training
    model.eval()
    try:
        probs = sliding_window_predict(
            forward,
            torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
            TileSettings(tile_size=tuple(tile_size), overlap=overlap, blend="gaussian", batch_size=batch_size),
        )
    finally:
        model.train(was_training)
    return probs.cpu().numpy()


def load_for_evaluation(
    checkpoint: Path, *, device: torch.device, layout: torch.memory_format | None = None
) -> torch.nn.Module:
    """A saved model (e.g. ``RUN/best``) in eval mode on ``device``, in ``layout`` when given (end-of-training steps)."""
    from unetkit.models.base import load_model

    model = load_model(checkpoint).to(device).eval()
    return model.to(memory_format=layout) if layout is not None else model


def predict_labels(
    model: torch.nn.Module,
    image: np.ndarray,
    *,
    tile_size: tuple[int, ...],
    threshold: float,
    amp_dtype: torch.dtype | None = None,
    memory_format: torch.memory_format | None = None,
) -> np.ndarray:
    """Class indices ``(*spatial)`` for a normalised ``image (C, *spatial)`` (validation and its overlays)."""
    from unetkit.runtime.postprocess import probabilities_to_labels

    probs = predict_probabilities(
        model, image, tile_size=tile_size, amp_dtype=amp_dtype, memory_format=memory_format
    )
    return probabilities_to_labels(probs, threshold=threshold)


def foreground_dice(
    pred: np.ndarray,
    target: np.ndarray,
    *,
    num_classes: int,
    ignore_index: int = 255,
    background: bool = True,
) -> float:
    """Mean Dice of one image over the foreground classes (``1..K-1``, or all K without a background
    class), ignoring ``ignore_index`` pixels. A class absent from both prediction and target scores 1.
    """
    from unetkit.metrics import dice_per_class

    scores = np.asarray(dice_per_class(pred, target, num_classes=num_classes, ignore_index=ignore_index))
    return float(np.mean(scores[1:] if background and num_classes > 1 else scores))
