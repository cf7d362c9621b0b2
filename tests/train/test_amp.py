"""fp16 loss scaling: chosen only for CUDA fp16, clips the true gradients, skips overflowing steps, resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from unetkit.precision import backward_and_step, grad_scaler_for, needs_grad_scaler
from unetkit.train.checkpoint import STATE_JSON, load_training_state, save_training_state

CUDA, CPU = torch.device("cuda"), torch.device("cpu")


@pytest.mark.parametrize(
    ("device", "dtype", "expected"),
    [(CUDA, torch.float16, True), (CUDA, torch.bfloat16, False), (CUDA, None, False),
     (CPU, torch.bfloat16, False), (CPU, None, False)],
)  # fmt: skip
def test_only_cuda_fp16_uses_a_grad_scaler(
    device: torch.device, dtype: torch.dtype | None, expected: bool
) -> None:
    assert needs_grad_scaler(device, dtype) is expected
    if device.type == "cpu":
        assert grad_scaler_for(device, dtype) is None


def _model_and_loss() -> tuple[torch.nn.Linear, torch.optim.SGD, torch.Tensor]:
    model = torch.nn.Linear(3, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0, 0.5]]))
        model.bias.fill_(0.25)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.tensor([[4.0, 1.0, -2.0], [3.0, 0.0, 8.0]])
    return model, optimizer, x


def _step(scaler: torch.amp.GradScaler | None, *, clip: float | None, factor: float = 1.0) -> torch.Tensor:
    model, optimizer, x = _model_and_loss()
    loss = (model(x) ** 2).sum() * factor
    backward_and_step(
        loss, optimizer=optimizer, parameters=list(model.parameters()), grad_clip=clip, scaler=scaler
    )
    return torch.cat([model.weight.detach().flatten(), model.bias.detach()])


def test_scaled_step_clips_the_unscaled_gradients() -> None:
    plain = _step(None, clip=1.0)
    scaled = _step(torch.amp.GradScaler("cpu", init_scale=2.0**10), clip=1.0)
    assert torch.equal(plain, scaled)  # power-of-two scale: unscaling is exact
    # The clip is active here (gradient norm ~ 60), so clipping the scaled gradients would have differed.
    assert not torch.allclose(plain, _step(None, clip=None))
    # With a clip of 1 and lr 0.1 the parameters move by exactly 0.1 in norm.
    start = torch.tensor([1.0, -2.0, 0.5, 0.25])
    assert torch.linalg.vector_norm(plain - start).item() == pytest.approx(0.1, rel=1e-5)


def test_overflowing_step_is_skipped_and_the_scale_halved() -> None:
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    after = _step(scaler, clip=1.0, factor=float("inf"))
    assert torch.equal(after, torch.tensor([1.0, -2.0, 0.5, 0.25]))
    assert scaler.get_scale() == 2.0**9


def test_scaler_state_is_saved_and_restored(tmp_path: Path) -> None:
    model, optimizer, _ = _model_and_loss()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=7)
    _step(scaler, clip=None)  # one good step: growth tracker 1
    save_training_state(
        tmp_path, model=model, optimizer=optimizer, ema=None, scalars={"step": 1}, grad_scaler=scaler
    )
    saved = json.loads((tmp_path / STATE_JSON).read_text())["grad_scaler"]
    assert saved["scale"] == 2.0**10 and saved["_growth_tracker"] == 1 and saved["growth_interval"] == 7

    fresh = torch.amp.GradScaler("cpu")
    scalars = load_training_state(tmp_path, model=model, optimizer=optimizer, ema=None, grad_scaler=fresh)
    assert scalars == {"step": 1}
    assert fresh.state_dict() == scaler.state_dict()


def test_state_from_before_per_step_batches_resumes_with_a_warning(tmp_path: Path) -> None:
    model, optimizer, _ = _model_and_loss()
    save_training_state(tmp_path, model=model, optimizer=optimizer, ema=None, scalars={"step": 3})
    meta = json.loads((tmp_path / STATE_JSON).read_text())
    del meta["batches"], meta["grad_scaler"]
    meta["numpy_rng"] = {
        "bit_generator": "PCG64",
        "state": {"state": 1, "inc": 1},
        "has_uint32": 0,
        "uinteger": 0,
    }
    (tmp_path / STATE_JSON).write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="older unetkit"):
        assert load_training_state(tmp_path, model=model, optimizer=optimizer, ema=None) == {"step": 3}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fp16_steps_with_a_grad_scaler() -> None:
    device = torch.device("cuda")
    scaler = grad_scaler_for(device, torch.float16)
    assert scaler is not None and scaler.is_enabled()
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1)
    ).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    x = torch.randn(2, 1, 16, 16, device=device)
    y = torch.randint(0, 2, (2, 16, 16), device=device)
    for _ in range(3):
        with torch.autocast(device_type="cuda", dtype=torch.float16):
            out = model(x)
        assert out.dtype == torch.float16
        loss = torch.nn.functional.cross_entropy(out.float(), y)
        backward_and_step(
            loss, optimizer=optimizer, parameters=list(model.parameters()), grad_clip=1.0, scaler=scaler
        )
    after = list(model.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))
    state = json.loads(json.dumps(scaler.state_dict()))  # JSON scalars only
    restored = torch.amp.GradScaler("cuda")
    restored.load_state_dict(state)
    assert restored.get_scale() == scaler.get_scale()
