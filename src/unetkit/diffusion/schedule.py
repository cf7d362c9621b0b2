"""The DDPM forward (noising) process, kept apart from the network.

Notation (Ho et al. 2020): ``beta_t`` is the variance added at step ``t``, ``alpha_t = 1 - beta_t`` and
``alpha_bar_t = prod_{s<=t} alpha_s`` (``alphas_cumprod``). A noisy sample is
``x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps``.

The tables are computed in float64 and cast to the sample's dtype where they are used, so that a float64
sample gets float64 arithmetic end to end.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch

BETA_SCHEDULES = ("linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")


@dataclass
class ScheduleConfig:
    """How the noise process is defined; saved with every diffusion run.

    Attributes:
        num_train_timesteps: number of noising steps ``T`` (timesteps are ``0 .. T-1``).
        beta_schedule: ``linear`` (betas evenly spaced from ``beta_start`` to ``beta_end``) or
            ``squaredcos_cap_v2`` (the cosine schedule of Nichol & Dhariwal 2021, betas capped at 0.999).
        beta_start, beta_end: ends of the linear schedule (ignored by the cosine one).
        prediction_type: what the network predicts: ``epsilon`` (the noise), ``sample`` (``x_0``) or
            ``v_prediction`` (``v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0``, Salimans & Ho 2022).
        clip_sample: clamp the predicted ``x_0`` to ``[-clip_sample_range, clip_sample_range]`` when sampling.
        clip_sample_range: bound used by ``clip_sample``.
        set_alpha_to_one: DDIM only: past the last step use ``alpha_bar = 1`` (else ``alpha_bar_0``).
        steps_offset: added to every inference timestep ("leading" spacing).
    """

    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    prediction_type: str = "epsilon"
    clip_sample: bool = True
    clip_sample_range: float = 1.0
    set_alpha_to_one: bool = True
    steps_offset: int = 0

    def __post_init__(self) -> None:
        if self.num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps must be >= 1, got {self.num_train_timesteps}")
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"unknown beta_schedule {self.beta_schedule!r}; choose one of {', '.join(BETA_SCHEDULES)}")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"unknown prediction_type {self.prediction_type!r}; choose one of {', '.join(PREDICTION_TYPES)}"
            )
        if not 0 < self.beta_start <= self.beta_end < 1:
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {self.beta_start}, {self.beta_end}")
        if self.steps_offset < 0:
            raise ValueError(f"steps_offset must be >= 0, got {self.steps_offset}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ScheduleConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - names)
        if unknown:
            raise ValueError(f"unknown schedule field(s): {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
        return cls(**raw)


def make_betas(config: ScheduleConfig) -> torch.Tensor:
    """The ``(T,)`` float64 betas of ``config``'s schedule."""
    steps = config.num_train_timesteps
    if config.beta_schedule == "linear":
        return torch.linspace(config.beta_start, config.beta_end, steps, dtype=torch.float64)
    # Cosine: alpha_bar(s) = cos^2(((s + 0.008) / 1.008) * pi / 2) on s in [0, 1]; beta_i is the ratio of
    # consecutive alpha_bar values, capped so the last steps do not become singular.
    s = torch.arange(steps + 1, dtype=torch.float64) / steps
    alpha_bar = torch.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
    return torch.clamp(1 - alpha_bar[1:] / alpha_bar[:-1], max=0.999)


class NoiseSchedule:
    """Tables of one schedule plus the forward-process maths that training needs.

    Attributes:
        config: the :class:`ScheduleConfig`.
        betas, alphas, alphas_cumprod: ``(T,)`` float64 tensors.
    """

    def __init__(self, config: ScheduleConfig | None = None) -> None:
        self.config = config or ScheduleConfig()
        self.betas = make_betas(self.config)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)

    @property
    def num_train_timesteps(self) -> int:
        return self.config.num_train_timesteps

    def alpha_bar(self, timesteps: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
        """``alpha_bar_t`` for each timestep, shaped to broadcast against ``like`` ``(N, C, *spatial)``.

        A negative timestep means "before the first step" and gives ``alpha_bar = 1``.
        """
        t = torch.as_tensor(timesteps, dtype=torch.long).reshape(-1)
        self._check_timesteps(t)
        table = torch.cat([self.alphas_cumprod, torch.ones(1, dtype=torch.float64)])
        values = table[torch.where(t < 0, torch.full_like(t, -1), t)]
        return values.to(device=like.device, dtype=like.dtype).reshape(-1, *([1] * (like.ndim - 1)))

    def add_noise(self, original: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Sample ``q(x_t | x_0)``: ``sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) noise``.

        Args:
            original: clean samples ``(N, C, *spatial)``.
            noise: standard normal noise of the same shape.
            timesteps: ``(N,)`` integer timesteps (or one for all).
        """
        a = self.alpha_bar(timesteps, original)
        return a.sqrt() * original + (1 - a).sqrt() * noise

    def get_velocity(self, original: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The v-prediction target ``sqrt(alpha_bar_t) noise - sqrt(1 - alpha_bar_t) x_0``."""
        a = self.alpha_bar(timesteps, original)
        return a.sqrt() * noise - (1 - a).sqrt() * original

    def training_target(self, original: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """What the network should output for ``x_t = add_noise(original, noise, timesteps)``."""
        kind = self.config.prediction_type
        if kind == "epsilon":
            return noise
        if kind == "sample":
            return original
        return self.get_velocity(original, noise, timesteps)

    def split_prediction(
        self, model_output: torch.Tensor, sample: torch.Tensor, timestep: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Turn a network output at ``timestep`` into ``(predicted x_0, predicted eps)``, unclipped."""
        a = self.alpha_bar(timestep, sample)
        kind = self.config.prediction_type
        if kind == "epsilon":
            return (sample - (1 - a).sqrt() * model_output) / a.sqrt(), model_output
        if kind == "sample":
            return model_output, (sample - a.sqrt() * model_output) / (1 - a).sqrt()
        return a.sqrt() * sample - (1 - a).sqrt() * model_output, a.sqrt() * model_output + (1 - a).sqrt() * sample

    def _check_timesteps(self, t: torch.Tensor) -> None:
        if t.numel() and int(t.max()) >= self.num_train_timesteps:
            raise ValueError(f"timestep {int(t.max())} out of range: the schedule has {self.num_train_timesteps} steps")
