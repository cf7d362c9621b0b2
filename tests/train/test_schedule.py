"""Learning-rate schedule against hand-computed values and torch's own schedulers."""

from __future__ import annotations

import math

import pytest
import torch

from unetkit.train.schedule import lr_at


@pytest.mark.parametrize(
    ("step", "kind", "expected"),
    [
        (0, "cosine", 0.25),  # warm-up: (0 + 1) / 4
        (3, "cosine", 1.0),  # last warm-up step
        (4, "cosine", 1.0),  # decay starts at progress 0
        (9, "cosine", 0.5 * (1 + math.cos(math.pi * 5 / 10))),  # 0.5
        (14, "cosine", 0.0),  # the end
        (99, "cosine", 0.0),  # past the end stays at 0
        (9, "poly", (1 - 0.5) ** 0.9),
        (9, "constant", 1.0),
    ],
)
def test_hand_computed(step: int, kind: str, expected: float) -> None:
    assert lr_at(step, base_lr=1.0, total_steps=14, warmup_steps=4, kind=kind) == pytest.approx(expected, abs=1e-12)


def test_cosine_matches_torch_cosine_annealing() -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=50, eta_min=0.0)
    for step in range(50):
        assert lr_at(step, base_lr=0.1, total_steps=50, warmup_steps=0) == pytest.approx(sched.get_last_lr()[0], abs=1e-12)
        opt.step()
        sched.step()


def test_poly_matches_torch_polynomial_lr() -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.01)
    sched = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=30, power=0.9)
    for step in range(30):
        ours = lr_at(step, base_lr=0.01, total_steps=30, warmup_steps=0, kind="poly")
        assert ours == pytest.approx(sched.get_last_lr()[0], rel=1e-9, abs=1e-15)
        opt.step()
        sched.step()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown schedule 'step'"):
        lr_at(0, base_lr=1.0, total_steps=10, kind="step")
    with pytest.raises(ValueError, match="total_steps must be positive"):
        lr_at(0, base_lr=1.0, total_steps=0)
