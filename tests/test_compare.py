"""``unetkit compare``: refusals before any training, and a short study on real ISBI slices end to end.

The study sets ``train.align=false``: with alignment on, a validation slower than the whole 15 s budget (a
loaded machine) makes the trainer's budget re-estimate negative (``train/loop.py``; reported, not fixed here).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from unetkit.cli import main
from unetkit.compare.options import MIN_BUDGET_S, MIN_STEPS
from unetkit.compare.study import check_support
from unetkit.config import Plan, apply_overrides

SMALL = [
    "--encoder", "plain", "--value-map", "0:1,255:0", "--shifts", "1,4", "--set", "train.align=false",
    "--set", "model.kwargs.width=4", "--set", "model.kwargs.depth=2", "--set", "train.patch_size=[64,64]",
    "--set", "train.batch_size=2", "--set", "train.precision=fp32", "--set", "train.val_fraction=0.34",
    "--set", "infer.tile_size=[256,256]",
]  # fmt: skip
EVERY_METRIC = ("dice", "iou", "precision", "recall", "boundary_f1", "hd95", "nsd", "shift_consistency",
                "shift_consistency_1", "shift_consistency_4", "seconds_per_image")  # fmt: skip


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--models", "unet,segformer"], "unknown model 'segformer'; choose from attention_unet, unet, unetplusplus"),
        (["--models", "unet,unet"], "named twice"),
        (["--tta", "none,d8"], "unknown level 'd8'; choose from none, flips, d4, d4+scales"),
        (["--time-budget", "5s"], f"too short to train: below {MIN_BUDGET_S:g}s"),
        (["--time-budget", "soon"], "cannot read duration"),
        (["--folds", "1"], "--folds must be 0"),
        (["--steps", "5"], f"--steps 5 is too few to train: the warm-up and the first validations take the first "
                           f"steps; use at least {MIN_STEPS}"),
    ],
)
def test_bad_requests_are_refused_in_one_line_before_training(
    flags: list[str], message: str, isbi_csv, tmp_path: Path, capsys: pytest.CaptureFixture[str]  # type: ignore[no-untyped-def]
) -> None:
    listing = isbi_csv(tmp_path, range(4))
    assert main(["compare", str(listing), "--out", str(tmp_path / "study"), *flags]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("unetkit compare: error:")
    assert not (tmp_path / "study").exists()  # refused before anything was planned or trained


def test_variants_that_do_not_fit_the_data_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    volumes = apply_overrides(Plan(), ["data.spatial_dims=3", "model.name=unetplusplus",
                                       "model.kwargs.spatial_dims=3", "model.kwargs.encoder=resnet18"])  # fmt: skip
    with pytest.raises(ValueError, match="unetplusplus with encoder resnet18: timm encoders are 2D only and the "
                                         "data is 3D; use --encoder plain"):  # fmt: skip
        check_support(volumes)
    check_support(apply_overrides(volumes, ["model.kwargs.encoder=plain"]))  # the plain encoder has a 3D form
    import unetkit.models.factory as factory

    monkeypatch.setattr(factory, "supported_spatial_dims", lambda name: (2,))
    with pytest.raises(ValueError, match="model unetplusplus has no 3D form \\(only 2D\\); the data is 3D"):
        check_support(apply_overrides(volumes, ["model.kwargs.encoder=plain"]))


def test_a_step_count_replaces_the_time_budget_in_every_variant(isbi_csv, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from unetkit.compare import CompareOptions
    from unetkit.compare.study import plan_variants
    from unetkit.data.options import DataConfig

    data = DataConfig(root=str(isbi_csv(tmp_path, range(4))), value_map={0: 1, 255: 0}, task="binary")
    timed, counted = (plan_variants(data, CompareOptions(models=("unet", "unetplusplus"), steps=steps, device="cpu"))
                      for steps in (0, 120))  # fmt: skip
    assert [(p.train.time_budget_s, p.train.steps) for p in timed] == [(600.0, 0)] * 2
    assert [(p.model.name, p.train.time_budget_s, p.train.steps) for p in counted] == [
        ("unet", None, 120), ("unetplusplus", None, 120)]


@pytest.mark.slow  # two 15 s trainings plus scoring: about a minute on an idle 2-core machine
def test_a_short_study_reports_every_metric_and_resumes(
    isbi_csv, tmp_path: Path, capsys: pytest.CaptureFixture[str]  # type: ignore[no-untyped-def]
) -> None:
    listing, out = isbi_csv(tmp_path, range(6)), tmp_path / "study"
    argv = ["compare", str(listing), "--out", str(out), "--models", "unet,unetplusplus", "--tta", "none,flips",
            "--time-budget", "15s", "--device", "cpu", *SMALL]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["options"]["models"] == ["unet", "unetplusplus"] and report["options"]["time_budget_s"] == 15
    assert "validation split: 2 of 6 images" in report["held_out"] and len(report["images"]) == 2
    for model in ("unet", "unetplusplus"):
        plan = Plan.load(out / "runs" / model / "plan.yaml")
        assert plan.model.name == model and plan.train.time_budget_s == 15
        for level in ("none", "flips"):
            summary, rows = report["summary"][model][level], report["per_image"][model][level]
            for metric in EVERY_METRIC:
                values = [r[metric] for r in rows]
                assert summary[metric]["low"] <= summary[metric]["mean"] <= summary[metric]["high"], metric
                assert summary[metric]["mean"] == pytest.approx(np.mean(values)), metric
            # One view has nothing to agree with; the four flips do, and every score is a fraction.
            assert (summary["view_agreement"] is None) == (level == "none")
            assert all(0 <= r[m] <= 1 for r in rows for m in ("dice", "boundary_f1", "shift_consistency"))
    versus_unet = {(d["tta"], d["metric"]) for d in report["differences"]["vs_first_model"]}
    assert {("none", "boundary_f1"), ("flips", "boundary_f1"), ("flips", "view_agreement"),
            ("none", "shift_consistency"), ("none", "hd95")} <= versus_unet  # fmt: skip
    versus_none = {(d["model"], d["metric"]) for d in report["differences"]["vs_first_tta"]}
    assert {("unet", "shift_consistency"), ("unetplusplus", "dice"), ("unet", "boundary_f1")} <= versus_none
    text = (out / "report.md").read_text()
    assert "| unetplusplus | flips |" in text and "unetplusplus vs unet (TTA none): boundary F1 " in text
    assert "too few images (2) to tell" in text  # two held-out images give intervals but no verdict
    assert (out / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Resumable: finished runs are reused, not retrained.
    weights = out / "runs" / "unet" / "best" / "model.safetensors"
    before = weights.stat().st_mtime_ns
    capsys.readouterr()
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "unet: finished run" in printed and "unetplusplus: finished run" in printed and "training for" not in printed
    assert "unet: scores of 2 held-out image(s) reused" in printed and "scoring 2" not in printed
    assert weights.stat().st_mtime_ns == before
    again = json.loads((out / "report.json").read_text())
    assert again["per_image"]["unet"]["none"][0]["dice"] == report["per_image"]["unet"]["none"][0]["dice"]


def test_the_report_of_hand_made_scores(tmp_path: Path) -> None:
    from unetkit.compare.report import write_report
    from unetkit.compare.scoring import Scores

    def rows(dice: list[float], agreement: float | None, seconds: float) -> list[dict[str, float | None]]:
        return [{"dice": d, "boundary_f1": d / 2, "hd95": 10 * (1 - d), "view_agreement": agreement,
                 "shift_consistency": 0.9, "seconds_per_image": seconds} for d in dice]  # fmt: skip

    base = [0.5, 0.6, 0.7, 0.8, 0.9, 0.6]
    scores = Scores(keys=[f"img{i}" for i in range(6)], held_out="six hand-made images", rows={
        "unet": {"none": rows(base, None, 1.0), "flips": rows(base, 0.8, 4.0)},
        "unetplusplus": {"none": rows([d + 0.1 for d in base], None, 2.0), "flips": rows(base, 0.9, 8.0)},
    })  # fmt: skip
    options = {"models": ["unet", "unetplusplus"], "tta": ["none", "flips"], "time_budget_s": 60.0, "folds": 0,
               "tolerance": 2.0, "shifts": [1]}  # fmt: skip
    report = write_report(tmp_path, scores, options=options)
    assert report["summary"]["unet"]["none"]["dice"]["mean"] == pytest.approx(np.mean(base))
    assert report["summary"]["unet"]["none"]["view_agreement"] is None
    diffs = {(d["model"], d["tta"], d["metric"]): d for d in report["differences"]["vs_first_model"]}
    up = diffs[("unetplusplus", "none", "boundary_f1")]  # +0.05 on every image
    assert (up["mean"], up["low"], up["high"]) == pytest.approx((0.05, 0.05, 0.05)) and up["significant"]
    assert up["images"] == 6
    assert up["relative"] == pytest.approx(0.05 / (np.mean(base) / 2))
    assert diffs[("unetplusplus", "none", "hd95")]["mean"] == pytest.approx(-1.0)  # lower is better
    assert diffs[("unetplusplus", "flips", "view_agreement")]["mean"] == pytest.approx(0.1)
    assert ("unetplusplus", "none", "view_agreement") not in diffs  # one view: nothing to compare
    tta = {(d["model"], d["metric"]): d for d in report["differences"]["vs_first_tta"]}
    assert tta[("unet", "seconds_per_image")]["relative"] == pytest.approx(3.0)
    assert not tta[("unet", "shift_consistency")]["significant"]  # identical: the interval is [0, 0]
    text = (tmp_path / "report.md").read_text()
    assert "| unet | none | 0.683 [" in text and "| - |" in text
    assert "unetplusplus vs unet (TTA none): boundary F1 +0.050 [+0.050, +0.050], significant at 95%" in text
    assert json.loads((tmp_path / "report.json").read_text())["per_image"]["unet"]["flips"][0]["view_agreement"] == 0.8


def test_a_run_is_reused_only_for_the_same_plan(tmp_path: Path) -> None:
    from unetkit._io import write_json_atomic
    from unetkit.compare.study import DONE_MARKER, finished_run

    plan = apply_overrides(Plan(), ["model.name=unet", "train.time_budget_s=60"])
    assert not finished_run(tmp_path, plan)  # nothing there yet (a killed run has no marker either)
    write_json_atomic(tmp_path / DONE_MARKER, {"plan": plan.to_dict(), "best_score": 0.5})
    assert finished_run(tmp_path, plan)
    assert not finished_run(tmp_path, apply_overrides(plan, ["train.time_budget_s=120"]))  # another budget
    (tmp_path / DONE_MARKER).write_text("{not json")
    assert not finished_run(tmp_path, plan)  # a damaged marker: train again


def test_scores_are_reused_only_for_the_same_training_images_and_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from unetkit._io import write_json_atomic
    from unetkit.compare import scoring
    from unetkit.compare.options import SCORES_FILE, CompareOptions
    from unetkit.compare.study import DONE_MARKER

    plan = apply_overrides(Plan(), ["model.name=unet", "train.steps=30"])
    run = tmp_path / "runs" / "unet"
    run.mkdir(parents=True)
    write_json_atomic(run / DONE_MARKER, {"plan": plan.to_dict(), "best_score": 0.5})
    samples = [SimpleNamespace(key="a"), SimpleNamespace(key="b")]
    monkeypatch.setattr(scoring, "held_out_part", lambda _plan: scoring.HeldOut(samples, [0, 0], "two images"))
    calls: list[tuple[str, ...]] = []

    def fake_score(_plan: Plan, _run: Path, held: scoring.HeldOut, options: CompareOptions) -> dict:
        calls.append(options.tta)
        return {level: [{"dice": 0.25 * len(calls), "hd95": float("inf")} for _ in held.samples] for level in options.tta}

    monkeypatch.setattr(scoring, "_score_variant", fake_score)

    def score(options: CompareOptions) -> dict:
        return scoring.score_variants([plan], {"unet": run}, options).rows["unet"]

    options = CompareOptions(models=("unet",), tta=("none", "flips"))
    first = score(options)
    assert first == score(options) and len(calls) == 1  # the second study scores nothing
    assert first["flips"][1] == {"dice": 0.25, "hd95": float("inf")}  # what JSON cannot spell survives too
    assert score(CompareOptions(models=("unet",), tta=("none", "d4")))["d4"][0]["dice"] == 0.5  # other levels
    assert score(CompareOptions(models=("unet",), tta=("none", "d4"), shifts=(2,)))["d4"][0]["dice"] == 0.75
    write_json_atomic(run / DONE_MARKER, {"plan": plan.to_dict(), "best_score": 0.6})  # trained again
    assert score(CompareOptions(models=("unet",), tta=("none", "d4"), shifts=(2,)))["d4"][0]["dice"] == 1.0
    (run / SCORES_FILE).write_text('{"key": ')  # a scoring killed mid-write leaves no such file; a damaged one
    assert score(CompareOptions(models=("unet",), tta=("none", "d4"), shifts=(2,)))["d4"][0]["dice"] == 1.25
    assert len(calls) == 5
