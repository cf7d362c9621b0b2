"""``unetkit doctor``: the report names this machine and the choices of ``auto`` on every CPU kind (simulated)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from _cpu_kinds import CPU_KINDS, NATIVE_BF16_KINDS
from unetkit.cli import main
from unetkit.doctor import diagnose, format_report, measure_choices

sys.path.insert(0, str(Path(__file__).resolve().parent / "infer"))
from _run_factory import make_run  # noqa: E402


@pytest.mark.parametrize("kind", sorted(CPU_KINDS))
def test_the_report_gives_each_kinds_choices_with_their_reasons(kind: str, simulate_cpu) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("onnxruntime")
    simulate_cpu(kind)
    report = diagnose(run=None, measure=False)
    assert report["cpu"]["kind"] == kind and report["device"] == "cpu"
    native = kind in NATIVE_BF16_KINDS
    assert report["training"]["precision"] == ("bf16" if native else "fp32")
    assert report["training"]["layout"] == ("channels_last" if native or kind == "x86-avx2" else "contiguous")
    assert f"this {kind} CPU" in report["training"]["reason"]
    expected_backend = "torch" if native or kind.startswith("aarch64") else "onnx"
    assert report["inference"]["backend"] == expected_backend
    assert report["inference"]["precision"] == ("bf16" if native else "fp32")
    text = format_report(report)
    assert f"kind {kind}" in text and f"inference: backend {expected_backend} (" in text
    assert report["packages"]["torch"] and "unetkit " in text.splitlines()[0]


def test_with_a_run_it_reports_the_runs_own_int8_graph(tmp_path: Path, simulate_cpu) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("onnxruntime")
    from unetkit.infer.backend import GRAPH_NAME, INT8_NAME
    from unetkit.infer.predictor import Predictor

    simulate_cpu("x86-avx512")
    run = make_run(tmp_path / "run", tile=64)
    assert diagnose(run=run, measure=False)["inference"]["backend"] == "onnx"
    Predictor.from_run(run, backend="onnx")  # caches model.onnx; its copy stands in for an accepted int8 graph
    best = run / "best"
    (best / INT8_NAME).write_bytes((best / GRAPH_NAME).read_bytes())
    (best / f"{INT8_NAME}.json").write_text((best / f"{GRAPH_NAME}.json").read_text())
    report = diagnose(run=run, measure=False)
    assert (report["inference"]["backend"], report["inference"]["precision"]) == ("int8", "int8")
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        diagnose(run=tmp_path, measure=False)


def test_the_command_prints_json_and_refuses_a_missing_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:  # type: ignore[type-arg]
    assert main(["doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) >= {"unetkit", "packages", "cpu", "training", "inference"}
    assert main(["doctor", str(tmp_path / "nowhere")]) == 1
    assert "not a run folder" in capsys.readouterr().err


def test_measure_times_every_choice() -> None:
    measured = measure_choices(size=64, steps=1)
    expected = {"train fp32 contiguous", "train fp32 channels_last", "train bf16 channels_last", "predict torch fp32",
                "predict torch bf16"}
    assert expected <= set(measured)
    assert all(row["per_s"] > 0 and row["unit"] in ("steps", "images") for row in measured.values())
