"""Diffusion models: the noise process (schedule), reverse steps (samplers), training and run files.

The denoising network itself is the registered model ``diffusion_unet`` (:mod:`unetkit.models.diffusion`).
"""

from unetkit.diffusion.checkpoint import DiffusionRun, load_run, save_run
from unetkit.diffusion.samplers import Sampling, ddim_step, ddpm_step, inference_timesteps, sample_images
from unetkit.diffusion.schedule import NoiseSchedule, ScheduleConfig
from unetkit.diffusion.train import EMA, DiffusionTrainConfig, TrainResult, train_diffusion

__all__ = [
    "EMA",
    "DiffusionRun",
    "DiffusionTrainConfig",
    "NoiseSchedule",
    "ScheduleConfig",
    "TrainResult",
    "ddim_step",
    "ddpm_step",
    "inference_timesteps",
    "load_run",
    "Sampling",
    "sample_images",
    "save_run",
    "train_diffusion",
]
