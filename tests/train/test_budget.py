"""Time budget -> step count: hand-computed cases of the pure estimators."""

import pytest

from unetkit.train.budget import EVAL_RESERVE, default_val_every, first_estimate, re_estimate


def test_first_estimate_keeps_a_reserve_for_evaluations():
    # 600 s budget, 10 s used by 8 steps, 0.5 s per step: 590 s * 0.95 / 0.5 = 1121 more steps.
    assert EVAL_RESERVE == 0.05
    assert first_estimate(budget_s=600, elapsed_s=10, step=8, step_s=0.5) == 8 + 1121


def test_re_estimate_counts_evaluations_and_the_final_one():
    # 300 s left; the final evaluation (20 s) leaves 280 s; each step costs 1 s + 20 s / 40 = 1.5 s -> 186.
    assert re_estimate(budget_s=600, elapsed_s=300, step=200, step_s=1.0, eval_s=20.0, val_every=40) == 386


def test_re_estimate_shrinks_when_evaluations_are_expensive():
    cheap = re_estimate(budget_s=600, elapsed_s=100, step=50, step_s=1.0, eval_s=0.0, val_every=50)
    costly = re_estimate(budget_s=600, elapsed_s=100, step=50, step_s=1.0, eval_s=50.0, val_every=50)
    assert cheap == 550
    # 450 s after the final evaluation, 2 s per step -> 225.
    assert costly == 275


def test_budget_already_spent_still_ends_after_the_next_step():
    assert first_estimate(budget_s=60, elapsed_s=90, step=8, step_s=1.0) == 9
    assert re_estimate(budget_s=60, elapsed_s=90, step=30, step_s=1.0, eval_s=5.0, val_every=10) == 31


def test_default_val_every():
    assert default_val_every(400) == 50
    assert default_val_every(5) == 1


@pytest.mark.parametrize("kwargs", [{"budget_s": 0}, {"step_s": -1.0}])
def test_bad_arguments_are_rejected(kwargs):
    args = {"budget_s": 60.0, "elapsed_s": 0.0, "step": 8, "step_s": 1.0, **kwargs}
    with pytest.raises(ValueError):
        first_estimate(**args)


def test_bad_val_every_is_rejected():
    with pytest.raises(ValueError, match="val_every"):
        re_estimate(budget_s=60, elapsed_s=0, step=8, step_s=1.0, eval_s=1.0, val_every=0)


def test_a_budgeted_run_with_costly_validation_ends_on_time(datasets, tmp_path):
    """Validating 6 whole 512x512 slices costs more than many training steps of a tiny model: the step
    count is re-estimated after each evaluation, so the run still ends near its budget (the first
    estimate alone, with its 5 % reserve, overran a 10 s budget several times over)."""
    import json

    from unetkit.cli import main

    root = datasets / "isbi2012_em_membrane"
    rows = ["image,mask"] + [f"{root}/images/{i}.png,{root}/masks/{i}.png" for i in range(12)]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    run = tmp_path / "run"
    code = main([
        "train", str(tmp_path / "train.csv"), "--out", str(run), "--value-map", "0:1,255:0", "--time-budget", "10s",
        "--encoder", "plain", "--set", "model.kwargs.width=4", "--set", "train.patch_size=[64,64]", "--set", "train.val_fraction=0.5",
        "--set", "train.augmentation=none",
    ])  # fmt: skip
    assert code == 0
    scalars = json.loads((run / "state.json").read_text())["scalars"]
    assert scalars["evals"] >= 2 and scalars["eval_s"] > 2.0  # validation really was costly
    assert scalars["step"] > 8
    # On time, relative to this machine's own pace (no wall-clock constant that a slower CPU would miss): past the
    # budget by less than one more evaluation and a few steps. Without the re-estimation the run overran by several
    # evaluations (the first estimate reserves 5 % for them).
    eval_mean = scalars["eval_s"] / scalars["evals"]
    step_mean = (scalars["elapsed"] - scalars["eval_s"]) / scalars["step"]
    assert scalars["elapsed"] < 10 + 1.5 * eval_mean + 5 * step_mean
