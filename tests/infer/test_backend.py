"""The inference backend rule on every CPU kind (simulated flags), the ONNX graph cached beside the weights, and
the speed tiling (one pass for an image that fits)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _run_factory import make_run

import unetkit.infer.backend as backend
from _cpu_kinds import CPU_KINDS, NATIVE_BF16_KINDS
from unetkit.infer.backend import GRAPH_NAME, INT8_NAME, choose_backend, graph_matches
from unetkit.infer.predictor import Predictor
from unetkit.runtime.tiling import pass_tiles

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("backend") / "run", tile=64, width=4, depth=2)


@pytest.mark.parametrize("kind", sorted(CPU_KINDS))
def test_auto_picks_onnx_where_measured_faster_torch_where_bf16_is_native(
    kind: str, run: Path, monkeypatch: pytest.MonkeyPatch, simulate_cpu  # type: ignore[no-untyped-def]
) -> None:
    simulate_cpu(kind)
    choice = choose_backend(run / "best", requested="auto", device="cpu")
    if kind in NATIVE_BF16_KINDS:
        assert (choice.backend, choice.graph) == ("torch", None)
        assert f"bf16 is native on this {kind} CPU" in choice.reason
    elif kind in ("x86-avx512", "x86-avx2"):
        assert (choice.backend, choice.graph) == ("onnx", run / "best" / GRAPH_NAME)
        assert choice.reason == f"auto: measured faster than torch's fp32 fast path on this {kind} CPU"
    else:  # aarch64 without bf16: not measured, torch stays
        assert choice.backend == "torch" and "not measured" in choice.reason
    assert choose_backend(run / "best", requested="auto", device="cuda").backend == "torch"


def test_without_onnxruntime_auto_is_torch_and_says_how_to_install(run: Path, monkeypatch: pytest.MonkeyPatch, simulate_cpu) -> None:  # type: ignore[no-untyped-def]
    simulate_cpu("x86-avx2")
    monkeypatch.setattr(backend, "onnxruntime_installed", lambda: False)
    choice = choose_backend(run / "best", requested="auto", device="cpu")
    assert choice.backend == "torch" and "pip install 'unetkit[onnx]'" in choice.reason
    with pytest.raises(ValueError, match=r"--backend onnx runs ONNX Runtime on the CPU: pip install"):
        choose_backend(run / "best", requested="onnx", device="cpu")


def test_explicit_choices_are_checked(run: Path) -> None:
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'; choose one of auto, torch, onnx, int8"):
        choose_backend(run / "best", requested="tensorrt", device="cpu")
    with pytest.raises(ValueError, match="no accepted int8 graph for these weights; make one with"):
        choose_backend(run / "best", requested="int8", device="cpu")
    with pytest.raises(ValueError, match="use --device cpu"):
        choose_backend(run / "best", requested="onnx", device="cuda")
    assert choose_backend(run / "best", requested="torch", device="cpu").reason == "--backend torch"


def test_auto_exports_once_reuses_the_cache_and_matches_torch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, simulate_cpu  # type: ignore[no-untyped-def]
) -> None:
    simulate_cpu("x86-avx2")
    run = make_run(tmp_path / "run", tile=64)
    image = np.random.default_rng(0).normal(100, 20, (1, 96, 80)).astype(np.float32)
    first = Predictor.from_run(run, backend="auto")
    graph = run / "best" / GRAPH_NAME
    assert first.backend == "onnx" and graph.is_file() and graph_matches(graph, run / "best")
    assert first.describe() == (f"backend: ONNX Runtime, fp32 graph {graph} (auto: measured faster than torch's "
                                "fp32 fast path on this x86-avx2 CPU)")
    stamp = graph.stat().st_mtime_ns
    second = Predictor.from_run(run, backend="auto")
    assert graph.stat().st_mtime_ns == stamp  # the cached graph was used, not exported again
    reference = Predictor.from_run(run, backend="torch", precision="fp32")
    got, want = second(image), reference(image)
    assert np.abs(got.probabilities - want.probabilities).max() < 1e-4
    assert (got.labels != want.labels).mean() < 1e-3


def test_new_weights_make_the_cached_graph_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, simulate_cpu) -> None:  # type: ignore[no-untyped-def]
    simulate_cpu("x86-avx512")
    run = make_run(tmp_path / "run", tile=64)
    Predictor.from_run(run, backend="auto")
    graph = run / "best" / GRAPH_NAME
    assert graph_matches(graph, run / "best")
    make_run(tmp_path / "run", tile=64, seed=1)  # a resumed or retrained run: other weights in best/
    assert not graph_matches(graph, run / "best")
    Predictor.from_run(run, backend="auto")
    assert graph_matches(graph, run / "best")  # exported again for the new weights


def test_an_accepted_int8_graph_is_preferred_and_a_stale_one_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, simulate_cpu  # type: ignore[no-untyped-def]
) -> None:
    simulate_cpu("x86-amx")
    run = make_run(tmp_path / "run", tile=64)
    Predictor.from_run(run, backend="onnx")  # writes model.onnx + its report
    best = run / "best"
    # Stand-in for `unetkit export --int8`'s accepted graph: the same report naming these weights.
    (best / INT8_NAME).write_bytes((best / GRAPH_NAME).read_bytes())
    (best / f"{INT8_NAME}.json").write_text((best / f"{GRAPH_NAME}.json").read_text())
    choice = choose_backend(best, requested="auto", device="cpu")
    assert (choice.backend, choice.graph) == ("int8", best / INT8_NAME)
    report = (best / f"{INT8_NAME}.json").read_text().replace('"weights_sha256": "', '"weights_sha256": "0')
    (best / f"{INT8_NAME}.json").write_text(report)
    assert choose_backend(best, requested="auto", device="cpu").backend == "torch"  # AMX: bf16 torch


def test_a_run_folder_that_cannot_take_the_graph_falls_back_to_torch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, simulate_cpu  # type: ignore[no-untyped-def]
) -> None:
    simulate_cpu("x86-avx2")
    run = make_run(tmp_path / "run", tile=64)
    monkeypatch.setattr(backend.os, "access", lambda path, mode: False)
    predictor = Predictor.from_run(run, backend="auto")
    assert predictor.backend == "torch" and "ONNX Runtime graph not cached" in predictor.describe()
    assert not (run / "best" / GRAPH_NAME).exists()
    with pytest.raises(PermissionError, match="not writable"):
        Predictor.from_run(run, backend="onnx")


@pytest.mark.parametrize(
    ("shape", "tile", "limit", "batch", "expected"),
    [
        ((512, 512), (256, 256), None, 4, ((512, 512), 1)),  # fits: one pass of the whole image
        ((300, 200), (256, 256), None, 4, ((300, 200), 4)),  # 60000 px: 4 such images fit a batch of 4 tiles
        ((3000, 500), (256, 256), None, 4, ((1024, 500), 1)),  # too large: tiles of up to 1024 per axis
        ((512, 512), (256, 256), 0, 4, ((256, 256), 4)),  # 0: the training patch, as before
        ((40, 56, 40), (40, 56, 40), None, 2, ((40, 56, 40), 2)),  # 3D auto keeps the plan's tile
        ((100, 100, 100), (32, 32, 32), 64**3, 2, ((64, 64, 64), 1)),
    ],
)
def test_pass_tiles_table(shape, tile, limit, batch, expected) -> None:  # type: ignore[no-untyped-def]
    assert pass_tiles(shape, tile, max_pass_pixels=limit, batch_size=batch) == expected


def test_an_image_that_fits_goes_through_the_network_once(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", tile=64, overlap=0.5, max_pass_pixels=None)
    image = np.random.default_rng(1).normal(0, 1, (1, 150, 130)).astype(np.float32)
    seen: list[tuple[int, ...]] = []

    def count(predictor: Predictor):  # type: ignore[no-untyped-def]
        def network(batch: torch.Tensor) -> torch.Tensor:
            seen.append(tuple(batch.shape))
            return predictor.network(batch)

        return predictor.with_network(network)

    count(Predictor.from_run(run, precision="fp32"))(image)
    assert seen == [(1, 1, 150, 130)]
    seen.clear()
    count(Predictor.from_run(run, precision="fp32", max_pass_pixels=0))(image)
    assert sum(s[0] for s in seen) == 16 and {s[2:] for s in seen} == {(64, 64)}  # 4 x 4 tiles of the patch
