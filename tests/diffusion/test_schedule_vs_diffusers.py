"""Noise schedule and sampler steps against diffusers' DDPMScheduler / DDIMScheduler as the oracle.

diffusers keeps its tables in float32; ours are float64. Tables are compared as they are (both round to
well within 1e-6). For the step comparisons the reference is given our float64 tables, so that the test
checks the step arithmetic itself: in float32, ``1 / sqrt(alpha_bar)`` near ``t = T`` (about 1e4 for the cosine
schedule) amplifies the tables' rounding far beyond 1e-6 on either side.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from unetkit.diffusion.samplers import ddim_step, ddpm_step, inference_timesteps
from unetkit.diffusion.schedule import NoiseSchedule, ScheduleConfig

diffusers = pytest.importorskip("diffusers")

SCHEDULES = ("linear", "squaredcos_cap_v2")
PREDICTIONS = ("epsilon", "sample", "v_prediction")
TOL = 1e-6


def _ours(schedule: str, prediction: str, **kw) -> NoiseSchedule:
    return NoiseSchedule(ScheduleConfig(beta_schedule=schedule, prediction_type=prediction, **kw))


def _float64_tables(ref, ours: NoiseSchedule) -> None:
    """Give the reference scheduler our float64 tables (see the module docstring)."""
    ref.betas = ours.betas.clone()
    ref.alphas = ours.alphas.clone()
    ref.alphas_cumprod = ours.alphas_cumprod.clone()
    if hasattr(ref, "final_alpha_cumprod"):
        ref.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64) if ref.config.set_alpha_to_one else ref.alphas_cumprod[0]


def _inputs(seed: int = 0, shape=(2, 3, 5, 4)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    # Model output scaled up so that clipping (when on) really bites for x0 predictions.
    return torch.randn(shape, generator=g, dtype=torch.float64), 1.5 * torch.randn(shape, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("steps", [1000, 50])
def test_tables_match_diffusers(schedule: str, steps: int) -> None:
    ours = _ours(schedule, "epsilon", num_train_timesteps=steps)
    ref = diffusers.DDPMScheduler(num_train_timesteps=steps, beta_schedule=schedule)
    assert ours.betas.shape == (steps,)
    assert torch.allclose(ours.betas, ref.betas.double(), atol=TOL, rtol=0)
    assert torch.allclose(ours.alphas_cumprod, ref.alphas_cumprod.double(), atol=TOL, rtol=0)


def test_linear_betas_hand_values() -> None:
    ours = _ours("linear", "epsilon", num_train_timesteps=5, beta_start=0.1, beta_end=0.5)
    assert ours.betas.tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5], abs=1e-15)
    assert ours.alphas_cumprod.tolist() == pytest.approx([0.9, 0.72, 0.504, 0.3024, 0.1512], abs=1e-15)


def test_cosine_betas_are_capped_and_start_small() -> None:
    ours = _ours("squaredcos_cap_v2", "epsilon")
    assert float(ours.betas.max()) == pytest.approx(0.999)  # the cap bites at t = T - 1
    assert float(ours.betas[0]) < 1e-4


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_add_noise_and_velocity_match_diffusers(schedule: str) -> None:
    ours = _ours(schedule, "v_prediction")
    ref = diffusers.DDPMScheduler(beta_schedule=schedule, prediction_type="v_prediction")
    _float64_tables(ref, ours)  # sqrt(1 - alpha_bar) at t = 0 turns float32 rounding into ~3e-6
    x0, noise = _inputs(1)
    t = torch.tensor([0, 999])
    ref_noisy = ref.add_noise(x0, noise, t)
    ref_v = ref.get_velocity(x0, noise, t)
    assert torch.allclose(ours.add_noise(x0, noise, t), ref_noisy, atol=TOL, rtol=0)
    assert torch.allclose(ours.get_velocity(x0, noise, t), ref_v, atol=TOL, rtol=0)
    assert torch.equal(ours.training_target(x0, noise, t), ours.get_velocity(x0, noise, t))


@pytest.mark.parametrize("steps", [1, 7, 50, 333, 1000])
@pytest.mark.parametrize("offset", [0, 1])
def test_inference_timesteps_match_diffusers_leading(steps: int, offset: int) -> None:
    if steps == 1000 and offset == 1:
        with pytest.raises(ValueError, match="past 999"):
            inference_timesteps(_ours("linear", "epsilon", steps_offset=1), 1000)
        return
    ref = diffusers.DDIMScheduler(steps_offset=offset)
    ref.set_timesteps(steps)
    assert inference_timesteps(_ours("linear", "epsilon", steps_offset=offset), steps) == ref.timesteps.tolist()


def test_inference_timesteps_hand_values_and_errors() -> None:
    schedule = _ours("linear", "epsilon", steps_offset=1)
    assert inference_timesteps(schedule, 4) == [751, 501, 251, 1]
    with pytest.raises(ValueError, match="between 1 and 1000"):
        inference_timesteps(schedule, 0)


@pytest.mark.parametrize(("schedule", "prediction", "clip"), list(itertools.product(SCHEDULES, PREDICTIONS, [True, False])))
def test_ddpm_step_matches_diffusers(schedule: str, prediction: str, clip: bool) -> None:
    ours = _ours(schedule, prediction, clip_sample=clip)
    ref = diffusers.DDPMScheduler(beta_schedule=schedule, prediction_type=prediction, clip_sample=clip)
    _float64_tables(ref, ours)
    sample, model_output = _inputs()
    for t in (999, 998, 500, 17, 1, 0):
        # diffusers draws the variance noise with torch.randn(shape, generator, dtype); so do we, same seed.
        expected = ref.step(model_output, t, sample, generator=torch.Generator().manual_seed(t))
        noise = torch.randn(sample.shape, generator=torch.Generator().manual_seed(t), dtype=torch.float64)
        got = ddpm_step(ours, model_output, t, sample, noise=noise)
        assert torch.allclose(got.pred_original_sample, expected.pred_original_sample, atol=TOL, rtol=0), t
        assert torch.allclose(got.prev_sample, expected.prev_sample, atol=TOL, rtol=0), t


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_strided_ddpm_step_matches_diffusers(prediction: str) -> None:
    ours = _ours("linear", prediction, steps_offset=1)
    ref = diffusers.DDPMScheduler(prediction_type=prediction, steps_offset=1)
    ref.set_timesteps(20)
    _float64_tables(ref, ours)
    sample, model_output = _inputs(3)
    timesteps = inference_timesteps(ours, 20)
    for t in timesteps:
        expected = ref.step(model_output, t, sample, generator=torch.Generator().manual_seed(t)).prev_sample
        noise = torch.randn(sample.shape, generator=torch.Generator().manual_seed(t), dtype=torch.float64)
        got = ddpm_step(ours, model_output, t, sample, prev_timestep=t - 50, noise=noise).prev_sample
        assert torch.allclose(got, expected, atol=TOL, rtol=0), t


@pytest.mark.parametrize(
    ("schedule", "prediction", "eta", "clip"),
    list(itertools.product(SCHEDULES, PREDICTIONS, [0.0, 0.5, 1.0], [True, False])),
)
def test_ddim_step_matches_diffusers(schedule: str, prediction: str, eta: float, clip: bool) -> None:
    ours = _ours(schedule, prediction, clip_sample=clip)
    ref = diffusers.DDIMScheduler(beta_schedule=schedule, prediction_type=prediction, clip_sample=clip)
    ref.set_timesteps(50)
    _float64_tables(ref, ours)
    sample, model_output = _inputs(2)
    for t in inference_timesteps(ours, 50)[::7] + [0]:
        noise = torch.randn(sample.shape, generator=torch.Generator().manual_seed(t), dtype=torch.float64)
        expected = ref.step(model_output, t, sample, eta=eta, variance_noise=noise)
        got = ddim_step(ours, model_output, t, sample, prev_timestep=t - 20, eta=eta, noise=noise)
        assert torch.allclose(got.pred_original_sample, expected.pred_original_sample, atol=TOL, rtol=0), t
        assert torch.allclose(got.prev_sample, expected.prev_sample, atol=TOL, rtol=0), t


@pytest.mark.parametrize(("set_alpha_to_one", "offset", "clipped_eps"), [(True, 0, False), (False, 1, True), (False, 0, False)])
def test_ddim_trajectory_matches_diffusers(set_alpha_to_one: bool, offset: int, clipped_eps: bool) -> None:
    """A whole 13-step run with a fixed analytic "model", eta > 0: timestep spacing, final alpha, offsets."""
    kw = dict(set_alpha_to_one=set_alpha_to_one, steps_offset=offset)
    ours = _ours("squaredcos_cap_v2", "epsilon", **kw)
    ref = diffusers.DDIMScheduler(beta_schedule="squaredcos_cap_v2", **kw)
    ref.set_timesteps(13)
    _float64_tables(ref, ours)

    def model(x: torch.Tensor, t: int) -> torch.Tensor:
        return 0.3 * x + 0.001 * t

    x_ours, _ = _inputs(4)
    x_ref = x_ours.clone()
    ratio = 1000 // 13
    assert ref.timesteps.tolist() == inference_timesteps(ours, 13)
    for t in inference_timesteps(ours, 13):
        noise = torch.randn(x_ours.shape, generator=torch.Generator().manual_seed(t), dtype=torch.float64)
        x_ref = ref.step(model(x_ref, t), t, x_ref, eta=0.8, variance_noise=noise, use_clipped_model_output=clipped_eps).prev_sample
        x_ours = ddim_step(
            ours, model(x_ours, t), t, x_ours, prev_timestep=t - ratio, eta=0.8, noise=noise,
            use_clipped_model_output=clipped_eps,
        ).prev_sample
    assert torch.allclose(x_ours, x_ref, atol=TOL, rtol=0)


def test_ddim_eta_zero_is_deterministic_and_eta_one_has_ddpm_variance() -> None:
    ours = _ours("linear", "epsilon", clip_sample=False)
    sample, model_output = _inputs(5)
    a = ddim_step(ours, model_output, 500, sample, prev_timestep=480, noise=torch.Generator().manual_seed(0))
    b = ddim_step(ours, model_output, 500, sample, prev_timestep=480, noise=torch.Generator().manual_seed(1))
    assert torch.equal(a.prev_sample, b.prev_sample)
    # With eta = 1 and a unit noise, the added term is sqrt of DDPM's posterior variance (hand formula).
    zero_noise = torch.zeros_like(sample)
    ones = torch.ones_like(sample)
    d = ddim_step(ours, model_output, 500, sample, prev_timestep=480, eta=1.0, noise=ones).prev_sample
    d0 = ddim_step(ours, model_output, 500, sample, prev_timestep=480, eta=1.0, noise=zero_noise).prev_sample
    a_t, a_p = float(ours.alphas_cumprod[500]), float(ours.alphas_cumprod[480])
    sigma = ((1 - a_p) / (1 - a_t) * (1 - a_t / a_p)) ** 0.5
    assert torch.allclose(d - d0, torch.full_like(d, sigma), atol=1e-12)


def test_step_input_errors() -> None:
    ours = _ours("linear", "epsilon")
    sample, model_output = _inputs()
    with pytest.raises(ValueError, match="noise shape"):
        ddpm_step(ours, model_output, 10, sample, noise=torch.zeros(1))
    with pytest.raises(ValueError, match="eta must be >= 0"):
        ddim_step(ours, model_output, 10, sample, prev_timestep=0, eta=-0.1)
    with pytest.raises(ValueError, match="out of range"):
        ddpm_step(ours, model_output, 1000, sample)
    with pytest.raises(ValueError, match="unknown beta_schedule"):
        ScheduleConfig(beta_schedule="cosine")
    with pytest.raises(ValueError, match="unknown prediction_type"):
        ScheduleConfig(prediction_type="noise")
