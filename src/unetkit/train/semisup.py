"""Semi-supervised training (``train --unlabelled``): a mean teacher labels unlabelled patches.

Each step also draws a batch of patches from the unlabelled images. A patch gets a **weak** view (random
flips and in-plane quarter turns) and a **strong** view: the weak view plus strong intensity changes
(brightness, contrast, gamma, noise, blur) and a cut-out box. Both views share their geometry, so the
teacher's labels on the weak view line up pixel for pixel with the strong view. The teacher is the EMA of
the model (mean teacher); the student (the model being trained) learns the teacher's label on the strong
view only at pixels where the teacher is confident (FixMatch-style): the largest class probability (one
sigmoid channel: ``max(p, 1 - p)``) at least ``train.unlabelled_threshold``. The unsupervised term is

    ``L_u = sum_x c(x) * CE(student(strong)(x), argmax teacher(weak)(x)) / N``

over all ``N`` pixels of the batch (``c(x)`` is 1 where confident, else 0: unconfident pixels add nothing and
give no gradient; few confident pixels give a small term). The step's loss is ``L_s + w(step) * L_u`` with
``w`` ramped up as ``train.unlabelled_weight * exp(-5 (1 - t)^2)``, ``t = step / (train.unlabelled_rampup
* total steps)`` capped at 1 (a sigmoid-shaped ramp: the teacher is poor at the start).

The labelled batch of a step is drawn first from the step's generator, exactly as without unlabelled
images; the unlabelled batch continues from the same generator, so batches stay a pure function of
``(seed, step)`` and ``--resume`` stays exact.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from unetkit.config import Plan
from unetkit.data.transforms import Augmentation, AugmentSettings
from unetkit.train.batches import PatchBatcher
from unetkit.train.sampling import sample_patch

# Strong view = weak view + these (no geometry: the teacher's labels must stay aligned) + a cut-out box.
STRONG = AugmentSettings(
    flips=False, rot90=False, affine_p=0.0, elastic_p=0.0, intensity_p=1.0, brightness=0.3, contrast=0.3,
    gamma_p=0.5, gamma=(0.7, 1.5), noise_p=0.5, noise_std=(0.0, 0.05), blur_p=0.3, blur_sigma=(0.5, 1.5),
)  # fmt: skip
CUTOUT_SIDE = 0.25
DEFAULT_TEACHER_DECAY = 0.99  # train.ema when --unlabelled is given to a plan without one  # the cut-out box's side, as a fraction of each patch side


def weak_view(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``image (C, *spatial)`` flipped on each spatial axis with probability 0.5, then turned by a random
    number of quarter turns in the last two axes when they are equal (always draws ``spatial + 1`` numbers)."""
    out = image
    for axis in range(1, image.ndim):
        if rng.random() < 0.5:
            out = np.flip(out, axis=axis)
    k = int(rng.integers(4))
    if out.shape[-1] == out.shape[-2]:
        out = np.rot90(out, k=k, axes=(-2, -1))
    return np.ascontiguousarray(out)


def cutout(image: np.ndarray, rng: np.random.Generator, *, side: float = CUTOUT_SIDE) -> np.ndarray:
    """A copy of ``image (C, *spatial)`` with one box of ``side`` times each spatial size set to 0 (the mean
    of a z-scored image), at a random place."""
    out = image.copy()
    box = [slice(None)]
    for size in image.shape[1:]:
        length = max(1, int(round(side * size)))
        start = int(rng.integers(0, size - length + 1))
        box.append(slice(start, start + length))
    out[tuple(box)] = 0.0
    return out


class UnlabelledBatcher:
    """Draws ``(weak (B, C, *patch), strong (B, C, *patch))`` float32 batches of unlabelled patches.

    Args:
        images: normalised ``(C, *spatial)`` float32 images.
        patch_size: spatial patch size (the labelled patches' size).
        batch_size: patches per batch.

    Raises:
        ValueError: no images.
    """

    def __init__(self, images: Sequence[np.ndarray], *, patch_size: tuple[int, ...], batch_size: int) -> None:
        if not images:
            raise ValueError("no unlabelled images")
        self.images = list(images)
        self.patch_size = tuple(patch_size)
        self.batch_size = batch_size
        self.strong = Augmentation(preset="strong", settings=STRONG, patch_size=self.patch_size, seed=None,
                                   ignore_index=255)

    def next(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        weak, strong = [], []
        for _ in range(self.batch_size):
            image = self.images[int(rng.integers(len(self.images)))]
            blank = np.zeros(image.shape[1:], dtype=np.uint8)  # sample_patch needs a mask; it is not used
            patch, _ = sample_patch(image, blank, patch_size=self.patch_size, rng=rng, foreground=False)
            w = weak_view(patch, rng)
            s, _ = self.strong(w, np.zeros(w.shape[1:], dtype=np.int64), rng)
            weak.append(w.astype(np.float32))
            strong.append(np.ascontiguousarray(cutout(s, rng), dtype=np.float32))
        return torch.from_numpy(np.stack(weak)), torch.from_numpy(np.stack(strong))


class SemiBatcher:
    """A labelled batch, then an unlabelled one from the same generator: ``(x, y, weak, strong)``."""

    def __init__(self, labelled: PatchBatcher, unlabelled: UnlabelledBatcher) -> None:
        self.labelled = labelled
        self.unlabelled = unlabelled

    def next(self, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        x, y = self.labelled.next(rng)  # first: the same draws as a run without unlabelled images
        weak, strong = self.unlabelled.next(rng)
        return x, y, weak, strong


def confident_labels(teacher_probs: torch.Tensor, *, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's labels and where it is confident.

    Args:
        teacher_probs: ``(B, K, *spatial)`` softmax probabilities, or ``(B, 1, *spatial)`` sigmoid ones.
        threshold: the least confidence that counts.

    Returns:
        ``(labels (B, *spatial) int64, confident (B, *spatial) bool)``; for one sigmoid channel the label is
        ``p >= 0.5`` and the confidence ``max(p, 1 - p)``, else ``argmax`` and ``max`` over the classes.
    """
    if teacher_probs.shape[1] == 1:
        p = teacher_probs[:, 0]
        return (p >= 0.5).long(), torch.maximum(p, 1 - p) >= threshold
    confidence, labels = teacher_probs.max(dim=1)
    return labels, confidence >= threshold


def unsupervised_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, *, threshold: float) -> torch.Tensor:
    """``sum over confident pixels of CE(student, teacher label) / number of pixels`` (see the module docstring).

    Args:
        student_logits: ``(B, K, *spatial)`` logits of the strong views (``K = 1``: one sigmoid channel).
        teacher_probs: ``(B, K, *spatial)`` the teacher's probabilities on the weak views.
        threshold: confidence threshold.

    Returns:
        A scalar tensor; 0 (with a zero gradient) when no pixel is confident.
    """
    labels, confident = confident_labels(teacher_probs.detach(), threshold=threshold)
    if student_logits.shape[1] == 1:
        per_pixel = F.binary_cross_entropy_with_logits(student_logits[:, 0], labels.float(), reduction="none")
    else:
        per_pixel = F.cross_entropy(student_logits, labels, reduction="none")
    return (per_pixel * confident).sum() / per_pixel.numel()


def unsupervised_weight(step: int, *, total_steps: int, weight: float, rampup: float) -> float:
    """``weight * exp(-5 (1 - t)^2)``, ``t = min(step / (rampup * total_steps), 1)``; ``rampup = 0``: ``weight``
    from the start; ``total_steps = 0`` (a time budget not yet calibrated): ``t = 0``.

    Example:
        >>> unsupervised_weight(100, total_steps=1000, weight=1.0, rampup=0.1)
        1.0
        >>> round(unsupervised_weight(0, total_steps=1000, weight=1.0, rampup=0.1), 5)
        0.00674
    """
    if rampup <= 0:
        return weight
    t = min(step / (rampup * total_steps), 1.0) if total_steps else 0.0
    return weight * math.exp(-5.0 * (1.0 - t) ** 2)


def teacher_probabilities(teacher: torch.nn.Module, weak: torch.Tensor) -> torch.Tensor:
    """The teacher's probabilities on the weak views (sigmoid for one channel, else softmax), without gradient;
    the full-resolution output when the model has deep-supervision heads."""
    with torch.no_grad():
        logits = teacher(weak)
        logits = logits[0] if isinstance(logits, (list, tuple)) else logits
        logits = logits.float()
        return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)


def with_unlabelled(plan: Plan, folders: Sequence[str | Path]) -> Plan:
    """``plan`` with ``train.unlabelled`` set to ``folders`` (resolved) and ``train.unlabelled_skipped`` to the
    files there that are images of the labelled set (:func:`run_image_files`; same resolved path or same bytes),
    so call it after the labelled subset (``train.labels*``) is set; a plan without an EMA
    gets ``train.ema = 0.99`` (the mean teacher).

    Raises:
        UnlabelledError: a folder that is missing or holds no image, or one whose every image is labelled.
    """
    from unetkit.data.unlabelled import split_off_labelled, unlabelled_files

    files = unlabelled_files(folders)
    split = split_off_labelled(files, run_image_files(plan))
    train = dataclasses.replace(
        plan.train, unlabelled=[str(Path(f).resolve()) for f in folders], ema=plan.train.ema or DEFAULT_TEACHER_DECAY,
        unlabelled_skipped=[str(p) for p in split.labelled],
    )  # fmt: skip
    return dataclasses.replace(plan, train=train)


def run_image_files(plan: Plan) -> list[Path]:
    """The image files whose masks the run uses: its training side (the ``train --labels`` subset when there is
    one) and its validation part, split exactly as training splits them. Images of the dataset outside them
    (not in the labelled subset) may be given as unlabelled."""
    from unetkit.data.discovery import discover
    from unetkit.runtime.run import run_split

    samples = discover(plan.data).samples
    train, val = run_split(plan, [s.key for s in samples], [s.group for s in samples])
    used = set(train) | set(val)
    return [p for s in samples if s.key in used for p in s.image_paths]


def load_unlabelled_images(plan: Plan) -> list[np.ndarray] | None:
    """The normalised unlabelled images of ``plan.train.unlabelled`` (those not in ``unlabelled_skipped``), or None
    when the plan has none.

    Raises:
        UnlabelledError: a folder gone or empty, an image with another channel count or dimensionality than the
            run's, or a plan with unlabelled folders but no EMA (``train.ema``), which is the teacher.
    """
    from unetkit.data.unlabelled import UnlabelledError, load_unlabelled, unlabelled_files

    cfg = plan.train
    if not cfg.unlabelled:
        return None
    if not cfg.ema:
        raise UnlabelledError("train.unlabelled needs train.ema (the mean teacher is the EMA of the model), e.g. 0.99")
    skipped = set(cfg.unlabelled_skipped)
    files = [p for p in unlabelled_files(cfg.unlabelled) if str(p) not in skipped]
    if not files:
        raise UnlabelledError(f"{', '.join(cfg.unlabelled)}: no unlabelled image left once the labelled ones are skipped")
    return load_unlabelled(files, plan.data)
