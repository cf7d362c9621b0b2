"""In-memory training data and the batch sampler (patches + paired augmentation)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from unetkit.runtime.examples import Example
from unetkit.train.sampling import sample_patch

Augment = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]


class PatchBatcher:
    """Draws batches of patches; all randomness comes from the ``rng`` passed to :meth:`next`.

    A fraction ``foreground_fraction`` of the patches (at least one per batch when > 0) is centred on
    foreground, which is what lets small, rare structures (defects, thin vessels) be learnt in minutes.
    """

    def __init__(
        self,
        examples: list[Example],
        *,
        patch_size: tuple[int, ...],
        batch_size: int,
        foreground_fraction: float,
        augment: Augment | None,
        ignore_index: int = 255,
        background: bool = True,
    ) -> None:
        if not examples:
            raise ValueError("no training images")
        self.examples = examples
        self.patch_size = tuple(patch_size)
        self.batch_size = batch_size
        self.foreground_fraction = foreground_fraction
        self.augment = augment
        self.ignore_index = ignore_index
        self.background = background

    def next(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch ``(x (B, C, *patch) float32, y (B, *patch) int64)``."""
        n_fg = int(round(self.batch_size * self.foreground_fraction))
        if self.foreground_fraction > 0:
            n_fg = max(n_fg, 1)
        images, masks = [], []
        for i in range(self.batch_size):
            example = self.examples[int(rng.integers(len(self.examples)))]
            image, mask = sample_patch(
                example.image,
                example.mask,
                patch_size=self.patch_size,
                rng=rng,
                foreground=i < n_fg,
                ignore_index=self.ignore_index,
                background=self.background,
            )
            if self.augment is not None:
                image, mask = self.augment(image, mask, rng)
            images.append(np.ascontiguousarray(image, dtype=np.float32))
            masks.append(np.ascontiguousarray(mask, dtype=np.int64))
        return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(masks))
