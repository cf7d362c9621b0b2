"""Bounded fuzzing in CI (derandomised, fixed example counts): mutated real images / volumes / GeoTIFFs, mask
decoding, plan / model-config loading, and the service's request handling. Only documented errors may escape
(see ``_targets.DOCUMENTED``); ``benchmarks/fuzz.py --minutes N`` runs the same targets for as long as asked."""

from __future__ import annotations

from pathlib import Path

import pytest
from _targets import DATASETS, TARGETS
from hypothesis import HealthCheck, given, settings

if not DATASETS.is_dir():
    pytest.skip(f"real datasets not found at {DATASETS}", allow_module_level=True)

CI = settings(max_examples=80, derandomize=True, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                     HealthCheck.data_too_large])  # fmt: skip


@CI
@given(example=TARGETS["readers"].strategy)
def test_readers_raise_only_documented_errors_on_mutated_real_files(example, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    TARGETS["readers"].run(*example, tmp_path)


@CI
@given(example=TARGETS["masks"].strategy)
def test_mask_decoding_raises_only_documented_errors(example, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    TARGETS["masks"].run(example, tmp_path)


@CI
@given(example=TARGETS["plans"].strategy)
def test_plan_and_model_config_loading_raise_only_documented_errors(example, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    TARGETS["plans"].run(example, tmp_path)


@settings(CI, max_examples=60)
@given(example=TARGETS["service"].strategy)
def test_the_service_answers_any_request_with_a_4xx_json_refusal_or_a_result(example, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("fastapi")
    TARGETS["service"].run(example, tmp_path)


def test_a_mutation_changes_the_file_and_an_undocumented_error_would_fail() -> None:
    """The harness can fail: a mutated seed differs from the seed, and a non-documented error propagates."""
    from _targets import _documented, mutate, seeds

    seed = seeds()["isbi.png"]
    assert mutate(seed, [("int", 16, 60000, False)])[16:20] == (60000).to_bytes(4, "big")
    assert len(mutate(seed, [("cut", 0.5)])) == len(seed) // 2
    _documented(lambda: int("x"))  # ValueError: documented, swallowed
    with pytest.raises(IndexError):
        _documented(lambda: [][1])


def test_found_by_fuzzing_a_float_mask_with_inf_or_nan_is_histogrammed_not_crashed() -> None:
    """benchmarks/fuzz.py found OverflowError (int(inf)) in the mask histogram; NaN gave a stray ValueError."""
    import numpy as np

    from unetkit.data.masks import count_values, infer_mask_encoding

    mask = np.array([[0.0, 1.0], [np.inf, np.nan]], dtype=np.float32)
    values, colours = count_values(mask)
    assert values[0] == 1 and values[1] == 1 and np.inf in values and len(values) == 4
    assert infer_mask_encoding(values, colours).needs_options


def test_found_by_fuzzing_a_model_config_with_an_unknown_keyword_is_a_value_error(tmp_path: Path) -> None:
    """benchmarks/fuzz.py found TypeError (SegModelConfig got an unexpected keyword) escaping load_model."""
    import json

    import unetkit

    unetkit.create_model("unet", in_channels=1, classes=2, encoder="plain", depth=2, width=4).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["kwargs"]["tpsampling"] = "transposed"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"config\.json: cannot build model 'unet' from its kwargs \(.*tpsampling"):
        unetkit.load_model(tmp_path)
