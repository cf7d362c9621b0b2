"""benchmarks/compare_claims.py: the verdict of each claim row, and the summaries the benchmarks page reads."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "benchmarks"), str(REPO / "scripts")]
import compare_claims  # noqa: E402
import docs_hooks  # noqa: E402


def _diff(mean: float, ref: float, *, significant: bool = True, images: int = 5, **key: str) -> dict:
    return {"mean": mean, "low": mean - 0.01, "high": mean + 0.01, "relative": mean / ref, "significant": significant,
            "images": images, **key}


@pytest.mark.parametrize(
    ("diff", "lower_is_better", "expected"),
    [
        (_diff(0.08, 0.8), False, "yes"),  # +10 %
        (_diff(0.014, 0.82), False, "no (+1.7%, outside the range)"),
        (_diff(0.2, 0.8), False, "no (+25.0%, outside the range)"),
        (_diff(0.08, 0.8, significant=False), False, "no (not significant)"),
        (_diff(0.08, 0.8, images=4), False, "no verdict (only 4 images)"),
        (_diff(-0.05, 0.8), False, "no (worse)"),
        (_diff(-0.5, 5.0), True, "yes"),  # HD95 down 10 %: better
        (_diff(0.75, 5.0), True, "no (worse)"),  # HD95 up 15 %
    ],
)
def test_verdict(diff: dict, lower_is_better: bool, expected: str) -> None:
    assert compare_claims.verdict(diff, (0.05, 0.15), lower_is_better=lower_is_better) == expected


@pytest.mark.parametrize(("dice", "expected"), [(0.31, "no verdict (reference Dice 0.31: not trained at this budget)"),
                                                (0.5, "yes"), (None, "yes")])  # fmt: skip
def test_no_verdict_against_an_untrained_reference(dice: float | None, expected: str) -> None:
    assert compare_claims.verdict(_diff(0.08, 0.8), (0.05, 0.15), reference_dice=dice) == expected


def _report() -> dict:
    models, levels = ["unet", "unetplusplus"], ["none", "flips"]
    vs_model = [_diff(0.08, 0.8, model="unetplusplus", tta="none", metric="boundary_f1"),
                _diff(-0.5, 5.0, model="unetplusplus", tta="none", metric="hd95"),
                _diff(0.01, 0.8, model="unetplusplus", tta="none", metric="dice")]  # fmt: skip
    vs_tta = [_diff(0.009, 0.976, model=m, tta="flips", metric=k) for m in models for k in ("shift_consistency", "dice")]
    summary = {m: {lvl: {"view_agreement": {"mean": 0.9}} if lvl != "none" else {} for lvl in levels} for m in models}
    return {"options": {"models": models, "tta": levels}, "held_out": "5 of 20 images",
            "differences": {"vs_first_model": vs_model, "vs_first_tta": vs_tta}, "summary": summary}


def test_summaries_have_one_row_per_comparison_and_the_benchmarks_page_reads_them(tmp_path: Path) -> None:
    args = argparse.Namespace(steps=300, budget="10m", models="unet,unetplusplus", tta="none,flips", machine="test machine")
    written = compare_claims.write_summaries(tmp_path, {"isbi": _report()}, args)
    assert [p.name.rsplit("_", 1)[0] for p in written] == ["compare_claims_boundary", "compare_claims_tta"]
    summaries = {s["_file"].split("_")[2]: s for s in docs_hooks.benchmark_summaries(tmp_path)}
    boundary, tta = summaries["boundary"], summaries["tta"]
    assert boundary["rows"] == [["isbi", "unetplusplus", "+0.080 [+0.070, +0.090] (+10.0%)",
                                 "-0.500 [-0.510, -0.490] (-10.0%)", "+0.010 [+0.000, +0.020] (+1.2%)", "yes", "yes"]]
    assert [r[:3] + r[-1:] for r in tta["rows"]] == [["isbi", "unet", "flips", "no (+0.9%, outside the range)"],
                                                      ["isbi", "unetplusplus", "flips", "no (+0.9%, outside the range)"]]
    assert boundary["machine"]["kind"] == "test machine" and "--steps 300" in boundary["command"]


def test_rows_take_the_reference_dice_from_the_summary() -> None:
    report = _report()
    report["summary"]["unet"]["none"]["dice"] = {"mean": 0.31}  # U-Net untrained; U-Net++ without TTA trained
    report["summary"]["unetplusplus"]["none"]["dice"] = {"mean": 0.8}
    untrained = "no verdict (reference Dice 0.31: not trained at this budget)"
    assert compare_claims.boundary_rows({"magnetic": report})[0][-2:] == [untrained, untrained]
    assert [r[-1] for r in compare_claims.tta_rows({"magnetic": report})] == [untrained, "no (+0.9%, outside the range)"]
