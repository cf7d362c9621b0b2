"""Bounded fuzzing in CI (derandomised, fixed example counts) of the loaders of handed-over files: plans written
to expand (YAML aliases, tags, nesting), ONNX graphs (mutated, spliced, external data), and a checkpoint's
config.json / state.json. ``benchmarks/fuzz.py --minutes N`` runs the same targets (``yaml_plans``, ``onnx``,
``checkpoint_json``) for as long as asked."""

from __future__ import annotations

from pathlib import Path

import pytest
from _targets import DATASETS, TARGETS
from hypothesis import HealthCheck, given, settings

if not DATASETS.is_dir():
    pytest.skip(f"real datasets not found at {DATASETS}", allow_module_level=True)

CI = settings(max_examples=100, derandomize=True, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                     HealthCheck.data_too_large])  # fmt: skip


@settings(CI, max_examples=300)
@given(example=TARGETS["yaml_plans"].strategy)
def test_expanding_and_tagged_plans_raise_only_documented_errors(example, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    TARGETS["yaml_plans"].run(example, tmp_path)


@settings(CI, max_examples=150)
@given(example=TARGETS["onnx"].strategy)
def test_mutated_onnx_graphs_raise_only_the_clis_one_line_errors(example, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("onnxruntime")
    TARGETS["onnx"].run(example, tmp_path)


@CI
@given(example=TARGETS["checkpoint_json"].strategy)
def test_edited_checkpoint_json_raises_only_the_clis_one_line_errors(example, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    TARGETS["checkpoint_json"].run(example, tmp_path)


def test_the_seeds_are_valid_and_the_edits_change_them(tmp_path: Path) -> None:
    """The harness can fail: each seed loads as it is, and an edit replaces exactly the chosen node."""
    import warnings

    from _handed import _checkpoint_seed, _graph_files, edit_json  # after _targets, which registers it
    from _targets import _real_plan_bytes

    import unetkit
    from unetkit.config import Plan
    from unetkit.infer.onnx_backend import load_onnx_graph

    (tmp_path / "plan.yaml").write_bytes(_real_plan_bytes())
    assert Plan.load(tmp_path / "plan.yaml") == Plan()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_onnx_graph(_graph_files(({}, None, None, [], []), tmp_path)).producer_name == "pytorch"
        assert load_onnx_graph(_graph_files(({}, "w.bin", None, [], []), tmp_path)).graph.initializer[0].external_data
    assert unetkit.load_model(_checkpoint_seed()).config.width == 4
    # leaves in order: {"a": [1, {"b": 2}]} -> ("a",), ("a", 0), ("a", 1), ("a", 1, "b")
    assert edit_json({"a": [1, {"b": 2}]}, [(3, None)]) == {"a": [1, {"b": None}]}
    assert edit_json({"a": [1, {"b": 2}]}, [(1, "<delete>")]) == {"a": [{"b": 2}]}
