"""Denoising training with an exponential moving average (EMA) of the weights.

Each step draws random crops ``x_0``, timesteps ``t ~ U{0..T-1}`` and noise ``eps``, builds
``x_t = add_noise(x_0, eps, t)`` and minimises the mean squared error between the network output and the
schedule's target (``eps``, ``x_0`` or ``v``).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from unetkit.diffusion.data import ImageFolder, random_batch
from unetkit.diffusion.schedule import NoiseSchedule
from unetkit.models.ema import ema_decay_at, update_ema


@dataclass
class DiffusionTrainConfig:
    """Training settings. Training stops at ``steps`` or after ``time_budget_s``, whichever comes first.

    Attributes:
        image_size: side of the square training crops.
        steps: maximum optimiser steps (None: only the time budget limits).
        time_budget_s: wall-clock budget in seconds (None: only ``steps`` limits).
        batch_size: crops per step.
        lr: AdamW learning rate (after a linear warm-up of ``warmup_steps``).
        weight_decay: AdamW weight decay.
        warmup_steps: steps of linear learning-rate warm-up.
        grad_clip: maximum gradient norm.
        ema_decay: EMA decay; the effective decay ramps up as ``min(ema_decay, (1 + n) / (10 + n))`` so short
            runs do not keep the random initial weights.
        flip: random left-right flips.
        seed: seeds crops, timesteps and noise.
    """

    image_size: int = 64
    steps: int | None = None
    time_budget_s: float | None = 300.0
    batch_size: int = 16
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 20
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    flip: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps is None and self.time_budget_s is None:
            raise ValueError("give a number of steps or a time budget (or both)")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise ValueError(f"time budget must be positive, got {self.time_budget_s} s")
        if self.batch_size < 1 or self.image_size < 1:
            raise ValueError("batch_size and image_size must be >= 1")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")


class EMA:
    """Exponential moving average of a model's parameters (buffers are copied as they are)."""

    def __init__(self, model: nn.Module, *, decay: float = 0.999) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.updates = 0

    def current_decay(self) -> float:
        """The decay the next update uses: ramps from 0.1 towards ``decay`` (so early weights fade fast)."""
        return ema_decay_at(self.updates, decay=self.decay)

    def update(self, model: nn.Module) -> None:
        """``ema = d * ema + (1 - d) * current`` for every parameter (see :func:`unetkit.models.ema.update_ema`)."""
        update_ema(self.model, model, decay=self.current_decay())
        self.updates += 1


@dataclass
class TrainResult:
    ema_model: nn.Module
    """The averaged model (what gets saved and sampled from)."""
    losses: list[float] = field(default_factory=list)
    """Training loss of every step."""
    seconds: float = 0.0
    interrupted: bool = False
    """True when Ctrl-C stopped training early (the result is still usable)."""


def diffusion_loss(
    model: nn.Module,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    *,
    generator: torch.Generator,
    class_labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """The denoising loss for one batch ``x0`` ``(B, C, H, W)`` in ``[-1, 1]`` (scalar MSE)."""
    t = torch.randint(schedule.num_train_timesteps, (x0.shape[0],), generator=generator)
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    t, noise = t.to(x0.device), noise.to(x0.device)
    x_t = schedule.add_noise(x0, noise, t)
    prediction = model(x_t, t, class_labels=class_labels)
    return F.mse_loss(prediction, schedule.training_target(x0, noise, t))


def train_diffusion(
    model: nn.Module,
    schedule: NoiseSchedule,
    data: ImageFolder,
    config: DiffusionTrainConfig,
    *,
    progress: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place on random crops of ``data``.

    Args:
        model: denoiser ``model(x, t, class_labels=...)`` (on the device to train on).
        schedule: the noise schedule.
        data: training images (see :func:`unetkit.diffusion.data.load_image_folder`).
        config: training settings.
        progress: called as ``progress(step, loss)`` after every step.

    Returns:
        :class:`TrainResult` with the EMA model and the loss of every step. Ctrl-C ends training early
        and still returns (``interrupted=True``).
    """
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    warmup = max(1, config.warmup_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
    ema = EMA(model, decay=config.ema_decay)
    result = TrainResult(ema_model=ema.model)
    start = time.perf_counter()
    model.train()
    try:
        while not _done(config, len(result.losses), time.perf_counter() - start):
            x0, labels = random_batch(
                data, batch_size=config.batch_size, image_size=config.image_size, generator=generator, flip=config.flip
            )
            labels = None if labels is None else labels.to(device)
            loss = diffusion_loss(model, schedule, x0.to(device), generator=generator, class_labels=labels)
            if not math.isfinite(loss.item()):
                raise RuntimeError(f"training diverged at step {len(result.losses) + 1} (loss {loss.item()}); lower --lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            ema.update(model)
            result.losses.append(loss.item())
            if progress is not None:
                progress(len(result.losses), result.losses[-1])
    except KeyboardInterrupt:
        result.interrupted = True
    result.seconds = time.perf_counter() - start
    return result


def _done(config: DiffusionTrainConfig, steps: int, elapsed: float) -> bool:
    if config.steps is not None and steps >= config.steps:
        return True
    return config.time_budget_s is not None and elapsed >= config.time_budget_s
