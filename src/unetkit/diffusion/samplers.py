"""Reverse-process steps (DDPM, DDIM) and the sampling loop.

Each step is a pure function of ``(schedule, model output, timestep, sample, noise)``; randomness enters only
through ``noise`` or a ``torch.Generator``, so a seed reproduces a run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn

from unetkit.diffusion.schedule import NoiseSchedule

SAMPLERS = ("ddim", "ddpm")


class StepOutput(NamedTuple):
    prev_sample: torch.Tensor
    """``x_{t_prev}``, same shape as the sample."""
    pred_original_sample: torch.Tensor
    """The (clipped, if configured) prediction of ``x_0`` the step was built on."""


def inference_timesteps(schedule: NoiseSchedule, num_steps: int) -> list[int]:
    """Descending timesteps for ``num_steps`` sampling steps, "leading" spacing.

    Timesteps are ``k * (T // num_steps) + steps_offset`` for ``k = num_steps - 1 .. 0``; e.g. T=1000, 50 steps:
    ``980, 960, ..., 20, 0``.

    Raises:
        ValueError: ``num_steps`` is not in ``1 .. T`` or the offset pushes a timestep past ``T - 1``.
    """
    total = schedule.num_train_timesteps
    if not 1 <= num_steps <= total:
        raise ValueError(f"number of sampling steps must be between 1 and {total} (the training steps), got {num_steps}")
    ratio = total // num_steps
    steps = [k * ratio + schedule.config.steps_offset for k in range(num_steps - 1, -1, -1)]
    if steps[0] >= total:
        raise ValueError(f"steps_offset {schedule.config.steps_offset} pushes timestep {steps[0]} past {total - 1}")
    return steps


def ddpm_step(
    schedule: NoiseSchedule,
    model_output: torch.Tensor,
    timestep: int,
    sample: torch.Tensor,
    *,
    prev_timestep: int | None = None,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> StepOutput:
    """One ancestral DDPM step: draw ``x_prev`` from the posterior ``q(x_prev | x_t, x_0 = predicted x_0)``.

    The variance is the posterior's own ("fixed_small"): ``(1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)``,
    where ``a`` is ``alpha_bar``; no noise is added at ``timestep == 0``.

    Args:
        schedule: the noise schedule.
        model_output: the network's prediction at ``timestep`` (``schedule.config.prediction_type``).
        timestep: current timestep ``t``.
        sample: ``x_t``, ``(N, C, *spatial)``.
        prev_timestep: the timestep to step to; ``t - 1`` by default, negative for "the clean image".
        noise: standard normal noise of ``sample``'s shape; drawn from ``generator`` when None.
        generator: random source used when ``noise`` is None.

    Returns:
        :class:`StepOutput`.
    """
    prev_t = timestep - 1 if prev_timestep is None else prev_timestep
    a_t = schedule.alpha_bar(timestep, sample)
    a_prev = schedule.alpha_bar(prev_t, sample)
    step_alpha = a_t / a_prev
    step_beta = 1 - step_alpha
    x0, _ = schedule.split_prediction(model_output, sample, timestep)
    x0 = _clip(schedule, x0)
    # Posterior mean (Ho et al. 2020, eq. 7) with the step's effective beta so strided schedules work too.
    mean = (a_prev.sqrt() * step_beta / (1 - a_t)) * x0 + (step_alpha.sqrt() * (1 - a_prev) / (1 - a_t)) * sample
    if timestep <= 0:
        return StepOutput(mean, x0)
    # Floored at 1e-20 like diffusers' DDPMScheduler (the variance is exactly 0 when stepping to a_prev = 1).
    variance = torch.clamp((1 - a_prev) / (1 - a_t) * step_beta, min=1e-20)
    noise = _noise_like(sample, noise, generator)
    return StepOutput(mean + variance.sqrt() * noise, x0)


def ddim_step(
    schedule: NoiseSchedule,
    model_output: torch.Tensor,
    timestep: int,
    sample: torch.Tensor,
    *,
    prev_timestep: int,
    eta: float = 0.0,
    noise: torch.Tensor | torch.Generator | None = None,
    use_clipped_model_output: bool = False,
) -> StepOutput:
    """One DDIM step (Song et al. 2021, eq. 12).

    ``x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma^2) eps + sigma z`` with
    ``sigma = eta * sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))``; ``eta = 0`` is deterministic,
    ``eta = 1`` matches DDPM's variance. A negative ``prev_timestep`` uses ``alpha_bar = 1`` (or
    ``alpha_bar_0`` when ``set_alpha_to_one`` is off).

    Args:
        schedule, model_output, timestep, sample: as in :func:`ddpm_step`.
        prev_timestep: the timestep to step to (``t - T // num_steps`` in a standard run).
        eta: noise weight in ``[0, 1]`` (larger values are allowed but rarely useful).
        noise: the noise ``z``, or a generator to draw it from (only used when ``eta > 0``).
        use_clipped_model_output: recompute ``eps`` from the clipped ``x0``.
    """
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    a_t = schedule.alpha_bar(timestep, sample)
    if prev_timestep < 0 and not schedule.config.set_alpha_to_one:
        a_prev = schedule.alpha_bar(0, sample)
    else:
        a_prev = schedule.alpha_bar(prev_timestep, sample)
    x0, eps = schedule.split_prediction(model_output, sample, timestep)
    x0 = _clip(schedule, x0)
    if use_clipped_model_output:
        eps = (sample - a_t.sqrt() * x0) / (1 - a_t).sqrt()
    variance = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
    std = eta * variance.sqrt()
    prev = a_prev.sqrt() * x0 + (1 - a_prev - std**2).sqrt() * eps
    if eta > 0:
        drawn = (noise, None) if not isinstance(noise, torch.Generator) else (None, noise)
        prev = prev + std * _noise_like(sample, *drawn)
    return StepOutput(prev, x0)


@dataclass(frozen=True)
class Sampling:
    """Which reverse process :func:`sample_images` runs.

    Attributes:
        sampler: ``ddim`` or ``ddpm``.
        num_steps: sampling steps ("leading" spacing, see :func:`inference_timesteps`).
        eta: DDIM noise weight (ignored by DDPM).
    """

    sampler: str = "ddim"
    num_steps: int = 50
    eta: float = 0.0


@torch.no_grad()
def sample_images(
    model: nn.Module,
    schedule: NoiseSchedule,
    *,
    shape: tuple[int, ...],
    sampling: Sampling = Sampling(),  # noqa: B008  (frozen, so a shared default is safe)
    generator: torch.Generator | None = None,
    class_labels: torch.Tensor | None = None,
    batch_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Generate images by running the reverse process from pure noise.

    Args:
        model: denoiser called as ``model(x, t, class_labels=...)``; put in eval mode here.
        schedule: the schedule the model was trained with.
        shape: ``(N, C, H, W)`` of the result.
        sampling: sampler, number of steps and DDIM's eta (:class:`Sampling`).
        generator: random source (initial noise and step noise); seed it to reproduce a run.
        class_labels: ``(N,)`` integer labels for a class-conditional model.
        batch_size: images per network call (all at once by default).
        progress: called as ``progress(done, total)`` after every step.

    Returns:
        ``(N, C, H, W)`` float32 samples, clamped to ``[-1, 1]``.
    """
    sampler, num_steps, eta = sampling.sampler, sampling.num_steps, sampling.eta
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    device = next(model.parameters()).device
    timesteps = inference_timesteps(schedule, num_steps)
    ratio = schedule.num_train_timesteps // num_steps
    model.eval()
    # Noise is drawn on the CPU so that a seed gives the same images on any device.
    x = torch.randn(shape, generator=generator, dtype=torch.float32).to(device)
    labels = None if class_labels is None else class_labels.to(device)
    for i, t in enumerate(timesteps):
        out = _predict(model, x, t, labels, batch_size or shape[0])
        noise = torch.randn(shape, generator=generator, dtype=torch.float32).to(device)
        if sampler == "ddim":
            x = ddim_step(schedule, out, t, x, prev_timestep=t - ratio, eta=eta, noise=noise).prev_sample
        else:
            x = ddpm_step(schedule, out, t, x, prev_timestep=t - ratio, noise=noise).prev_sample
        if progress is not None:
            progress(i + 1, len(timesteps))
    return x.clamp(-1, 1)


def _predict(
    model: nn.Module, x: torch.Tensor, t: int, labels: torch.Tensor | None, batch_size: int
) -> torch.Tensor:
    outs = []
    for start in range(0, x.shape[0], batch_size):
        chunk = x[start : start + batch_size]
        steps = torch.full((chunk.shape[0],), t, dtype=torch.long, device=x.device)
        chunk_labels = None if labels is None else labels[start : start + batch_size]
        outs.append(model(chunk, steps, class_labels=chunk_labels))
    return torch.cat(outs)


def _clip(schedule: NoiseSchedule, x0: torch.Tensor) -> torch.Tensor:
    if not schedule.config.clip_sample:
        return x0
    bound = schedule.config.clip_sample_range
    return x0.clamp(-bound, bound)


def _noise_like(sample: torch.Tensor, noise: torch.Tensor | None, generator: torch.Generator | None) -> torch.Tensor:
    if noise is None:
        return torch.randn(sample.shape, generator=generator, dtype=sample.dtype, device=sample.device)
    if noise.shape != sample.shape:
        raise ValueError(f"noise shape {tuple(noise.shape)} does not match the sample's {tuple(sample.shape)}")
    return noise.to(dtype=sample.dtype, device=sample.device)
