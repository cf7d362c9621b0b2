"""The loading rule of each file kind that may be handed over (plans, ONNX graphs, checkpoint JSON): limits at
their edges, hand-counted YAML node graphs, references outside a folder, and the two cases of issue 31 through the
real CLI (a YAML alias-expansion plan and a corrupt ONNX graph refused at once, one line, no traceback)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _cases import alias_bomb_plan, deep_json
from _harness import REPO
from _onnx_graphs import graph_bytes, tiny_graph, with_external_weights

from unetkit.config import PLAN_LIMITS, Plan, apply_overrides
from unetkit.untrusted import UntrustedFileError, inside_folder, load_yaml_limited, yaml_graph_size


# -- YAML ----------------------------------------------------------------------------------------------------
def _node(text: str):  # type: ignore[no-untyped-def]
    import yaml

    return yaml.compose(text, Loader=yaml.SafeLoader)


def test_yaml_graph_size_counts_an_alias_once_and_its_expansion_in_full() -> None:
    # mapping(1) + keys a, b (2) + the sequence (1) + its items 1, 2 (2) = 6 distinct nodes; expanded, b's alias
    # repeats the sequence and its items: 6 + 3 = 9. Depth: mapping > sequence = 2.
    assert yaml_graph_size(_node("a: &x [1, 2]\nb: *x\n")) == (6, 9, 2)
    assert yaml_graph_size(_node("7")) == (1, 1, 0)
    # The alias-expansion plan: a0 is a sequence of 9 scalars (10 nodes), a_i a sequence of 9 aliases of a_(i-1)
    # (1 + 9 * size(a_(i-1)) nodes expanded), and train.labels_keys one more alias of a9.
    sizes = [10]
    for _ in range(9):
        sizes.append(1 + 9 * sizes[-1])
    # distinct: the mapping, its 11 keys (a0..a9, train), 10 sequences, 9 scalars, train's mapping and its key.
    # expanded: the mapping, 11 keys, every a_i expanded, and train's mapping + key + a9 again.
    # depth: a0 is 1, a9 is 10, train's mapping 11, the document's mapping 12.
    assert yaml_graph_size(_node(alias_bomb_plan().decode())) == (33, 1 + 11 + sum(sizes) + 2 + sizes[-1], 12)


def test_alias_expansion_bound_is_exact(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text("a: &x [1, 2, 3, 4, 5, 6, 7, 8, 9]\nb: *x\n")  # the alias adds the sequence + 9 items = 10
    assert load_yaml_limited(path, what="plan", max_bytes=1024, max_alias_nodes=10)["b"] == list(range(1, 10))
    with pytest.raises(UntrustedFileError, match=r"plan\.yaml: plan uses YAML aliases that expand 13 nodes to 23, "
                                                 r"over the limit of 9 added nodes"):
        load_yaml_limited(path, what="plan", max_bytes=1024, max_alias_nodes=9)


def test_a_hand_written_plan_may_share_values_through_anchors(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text("infer:\n  tile_size: &t [96, 96]\ntrain:\n  patch_size: *t\n")
    plan = Plan.load(path)
    assert plan.train.patch_size == [96, 96] and plan.infer.tile_size == [96, 96]


@pytest.mark.parametrize(("text", "problem"), [
    ("a: &x [1, *x]\n", "alias inside the node it names"),
    ("a: &x {b: *x}\n", "alias inside the node it names"),
    ("a: *missing\n", "not valid YAML (found undefined alias"),
    ("a: !!python/name:os.system x\n", "not valid YAML (could not determine a constructor"),
    ("a: [1, 2\n", "not valid YAML"),
    ("[" * 2000 + "]" * 2000, "not valid YAML (while increasing flow level exceeded maximum nesting depth"),
])  # fmt: skip
def test_malformed_yaml_is_one_line_naming_the_file(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(UntrustedFileError) as info:
        load_yaml_limited(path, what="plan", max_bytes=2**20)
    message = str(info.value)
    assert message.startswith(f"{path}: plan ") and problem in message and "\n" not in message


def test_plan_depth_limit_is_exact(tmp_path: Path) -> None:
    depth = PLAN_LIMITS["max_depth"]
    ok, deep = tmp_path / "ok.json", tmp_path / "deep.json"
    ok.write_bytes(b'{"x": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}")
    deep.write_bytes(deep_json(depth))
    assert isinstance(Plan.load(ok), Plan)  # depth == limit: read (the unknown top-level key is ignored)
    with pytest.raises(UntrustedFileError, match=rf"deep\.json: plan nests {depth + 1} levels deep, over the limit "
                                                 rf"of {depth}"):
        Plan.load(deep)


def test_plan_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"#" * (PLAN_LIMITS["max_bytes"] + 1))
    with pytest.raises(UntrustedFileError, match=r"big\.yaml: plan is 8\.0 MiB, over the 8 MiB limit"):
        Plan.load(path)


@pytest.mark.parametrize(("override", "problem"), [
    ("train.lr=.inf", "train.lr: must be a finite number, got inf"),
    ("infer.shift=[.nan, 0]", "infer.shift[0]: must be a finite number, got nan"),
    ("train.ema=-.inf", "train.ema: must be a finite number, got -inf"),
    ("train.patch_size=[0x20000000000001, 1]", "train.patch_size[0]: integer 9007199254740993 is out of range"),
    ("model.kwargs={width: 1e999}", "model.kwargs.width: expected int"),
    ("model.kwargs={dropout: .nan}", "model.kwargs.dropout: must be a finite number, got nan"),
    ("train.patch_size=[0x" + "f" * 40 + "]", "train.patch_size[0]: integer of 160 bits is out of range"),
])  # fmt: skip
def test_plan_numbers_must_be_finite_and_in_range(override: str, problem: str) -> None:
    with pytest.raises(ValueError) as info:
        apply_overrides(Plan(), [override])
    assert problem in str(info.value)


def test_largest_accepted_integer() -> None:
    assert apply_overrides(Plan(), [f"train.steps={2**53}"]).train.steps == 2**53


# -- references inside a folder --------------------------------------------------------------------------------
def test_inside_folder(tmp_path: Path) -> None:
    (tmp_path / "m" / "sub").mkdir(parents=True)
    (tmp_path / "secret").write_text("x")
    os.symlink(tmp_path / "secret", tmp_path / "m" / "link")
    folder = tmp_path / "m"
    assert inside_folder(folder, "sub/../w.bin", source="s", what="w") == (folder / "w.bin").resolve()
    for reference, problem in [("../secret", "leads outside"), ("/etc/passwd", "is absolute"),
                               ("link", "leads outside"), ("", "empty"), ("C:/x", "is absolute"),
                               ("sub/../../secret", "leads outside")]:  # fmt: skip
        with pytest.raises(UntrustedFileError, match=problem):
            inside_folder(folder, reference, source="s", what="w")


# -- ONNX ------------------------------------------------------------------------------------------------------
onnx = pytest.importorskip("onnx")


def test_a_valid_graph_loads_and_fits_the_contract(tmp_path: Path) -> None:
    from unetkit.infer.onnx_backend import check_graph_contract, load_onnx_graph

    path = tmp_path / "m.onnx"
    path.write_bytes(graph_bytes())
    model = load_onnx_graph(path)
    assert model.producer_name == "pytorch" and [n.op_type for n in model.graph.node] == ["Conv", "Softmax"]
    check_graph_contract(model, path=path, in_channels=1, classes=2, spatial_dims=2)
    with pytest.raises(UntrustedFileError, match=r"'image' has 4 dimensions; this run's 3D model needs 5"):
        check_graph_contract(model, path=path, in_channels=1, classes=2, spatial_dims=3)
    with pytest.raises(UntrustedFileError, match=r"the graph has 2 output class\(es\), this run's model has 3"):
        check_graph_contract(model, path=path, in_channels=1, classes=3, spatial_dims=2)
    check_graph_contract(model, path=path, in_channels=1, classes=None, spatial_dims=2)  # classes unknown


def test_every_truncation_of_a_graph_is_refused_in_one_line(tmp_path: Path) -> None:
    from unetkit.infer.onnx_backend import load_onnx_graph

    data = graph_bytes()
    path = tmp_path / "m.onnx"
    for cut in range(0, len(data), 7):
        path.write_bytes(data[:cut])
        with pytest.raises(UntrustedFileError) as info:
            load_onnx_graph(path)
        assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def test_an_unknown_producer_is_warned_not_refused(tmp_path: Path) -> None:
    from unetkit.infer.onnx_backend import ForeignGraphWarning, load_onnx_graph

    path = tmp_path / "m.onnx"
    path.write_bytes(graph_bytes(producer="somebody"))
    with pytest.warns(ForeignGraphWarning, match=r"m\.onnx: written by 'somebody', not by `unetkit export`"):
        load_onnx_graph(path)


def test_external_data_must_lie_inside_its_file(tmp_path: Path) -> None:
    from unetkit.infer.onnx_backend import load_onnx_graph

    path = tmp_path / "m.onnx"
    with_external_weights(path, location="w.bin")
    assert load_onnx_graph(path).graph.initializer[0].data_location == onnx.TensorProto.EXTERNAL
    (tmp_path / "w.bin").write_bytes((tmp_path / "w.bin").read_bytes()[:-4])  # 18 floats = 72 bytes, now 68
    with pytest.raises(UntrustedFileError, match=r"lies outside 'w\.bin' \(0\+72 > 68 bytes\)"):
        load_onnx_graph(path)


def test_graph_size_limit(tmp_path: Path) -> None:
    from unetkit.infer.onnx_backend import load_onnx_graph

    path = tmp_path / "m.onnx"
    data = tiny_graph().SerializeToString()
    path.write_bytes(data)
    load_onnx_graph(path, max_bytes=len(data))
    with pytest.raises(UntrustedFileError, match="ONNX model is 0.0 MiB, over the 0 MiB limit"):
        load_onnx_graph(path, max_bytes=len(data) - 1)


# -- checkpoint JSON -------------------------------------------------------------------------------------------
def test_model_config_must_be_an_object_with_typed_entries(tmp_path: Path) -> None:
    import unetkit

    unetkit.create_model("unet", in_channels=1, classes=2, encoder="plain", depth=2, width=4).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "kwargs": [1]}))
    with pytest.raises(ValueError, match=r"config\.json: not a unetkit model config \(expected name: str, kwargs: "
                                         r"object, format_version: int; found .*'kwargs': 'list'"):
        unetkit.load_model(tmp_path)


# -- the two cases of issue 31, through the real CLI -----------------------------------------------------------
def _cli(argv: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run ``python -m unetkit.cli`` and return (result, wall seconds, CPU seconds of the child)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "unetkit.cli", *argv], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=600)  # fmt: skip
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return done, wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _refused_in_one_line(done: subprocess.CompletedProcess, *expected: str) -> None:
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr + done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and all(e in lines[0] for e in expected), done.stderr[-2000:]


@pytest.mark.parametrize("kind", ["alias-plan", "corrupt-onnx"])
def test_issue_31_cases_are_refused_at_once_through_the_cli(kind: str, tmp_path: Path, template_run: Path) -> None:
    """Refused with one line and no traceback, within 5 s of what the same command costs to refuse a harmless
    bad file at the same point (measured in the child's CPU seconds, so a loaded machine does not fail it:
    starting Python and importing torch alone takes over 5 s of wall time on a busy 2-core machine). Before the
    loading rules, the plan kept `unetkit train` busy past a minute and the graph ended in a protobuf traceback."""
    import shutil

    if kind == "alias-plan":
        (tmp_path / "laughs.yaml").write_bytes(alias_bomb_plan())
        (tmp_path / "typo.yaml").write_text("train:\n  steps: many\n")
        argv = ["train", str(tmp_path / "nodata"), "--out", str(tmp_path / "run"), "--plan"]
        hostile, harmless = argv + [str(tmp_path / "laughs.yaml")], argv + [str(tmp_path / "typo.yaml")]
        expected: tuple[str, ...] = ("laughs.yaml", "YAML aliases", "over the limit")
    else:
        run = shutil.copytree(template_run, tmp_path / "run")
        from PIL import Image

        (tmp_path / "in").mkdir()
        Image.new("L", (40, 30), 90).save(tmp_path / "in" / "a.png")
        data = graph_bytes()
        (tmp_path / "corrupt.onnx").write_bytes(bytes(b ^ 0xFF for b in data[:64]) + data[64:])
        (tmp_path / "rgb.onnx").write_bytes(graph_bytes(channels=3))
        argv = ["predict", str(run), str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--onnx"]
        hostile, harmless = argv + [str(tmp_path / "corrupt.onnx")], argv + [str(tmp_path / "rgb.onnx")]
        expected = ("corrupt.onnx", "not an ONNX model")
    bad, bad_wall, bad_cpu = _cli(hostile, tmp_path)
    base, base_wall, base_cpu = _cli(harmless, tmp_path)
    _refused_in_one_line(bad, *expected)
    _refused_in_one_line(base)
    assert bad_cpu - base_cpu < 5.0, (bad_cpu, base_cpu, bad_wall, base_wall)


@pytest.mark.parametrize(("edit", "problem"), [
    (lambda g: g.update(lr="fast"), r"param_groups\[0\]\.lr is 'fast', which does not fit the optimiser's '0\.001'"),
    (lambda g: g.update(lr=float("nan")), r"param_groups\[0\]\.lr is 'nan'"),
    (lambda g: g.update(betas=[0.9]), r"param_groups\[0\]\.betas is '\[0\.9\]'"),
    (lambda g: g.pop("weight_decay"), r"param_groups\[0\] lacks weight_decay"),
    (lambda g: g.update(amsgrad=1), r"param_groups\[0\]\.amsgrad is '1'"),
])  # fmt: skip
def test_state_json_optimiser_settings_must_fit_the_optimiser(tmp_path: Path, edit, problem: str) -> None:  # type: ignore[no-untyped-def]
    import torch

    import unetkit
    from unetkit.train.checkpoint import load_training_state, save_training_state

    def parts():  # type: ignore[no-untyped-def]
        torch.manual_seed(0)
        model = unetkit.create_model("unet", in_channels=1, classes=2, encoder="plain", depth=2, width=4)
        return model, torch.optim.AdamW(model.parameters(), lr=1e-3)

    model, optimizer = parts()
    save_training_state(tmp_path, model=model, optimizer=optimizer, ema=None, scalars={"step": 3})
    model, optimizer = parts()
    assert load_training_state(tmp_path, model=model, optimizer=optimizer, ema=None) == {"step": 3}  # as saved
    meta = json.loads((tmp_path / "state.json").read_text())
    edit(meta["param_groups"][0])
    (tmp_path / "state.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=rf"state\.json: {problem}"):
        load_training_state(tmp_path, model=model, optimizer=optimizer, ema=None)


def test_external_data_must_match_its_tensor_and_name_each_key_once(tmp_path: Path) -> None:
    """Found by benchmarks/fuzz.py: a length shorter than the tensor, or a key given twice (ONNX Runtime reads the
    first, a dict the last), reached ONNX Runtime, which printed its own multi-line log before refusing."""
    from unetkit.infer.onnx_backend import load_onnx_graph

    path = tmp_path / "m.onnx"
    with_external_weights(path, location="w.bin")  # conv.weight: 2 x 1 x 3 x 3 float32 = 72 bytes
    model = onnx.ModelProto.FromString(path.read_bytes())
    entries = model.graph.initializer[0].external_data
    next(e for e in entries if e.key == "length").value = "8"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(UntrustedFileError, match=r"'conv\.weight' is 8 bytes, its shape \[2, 1, 3, 3\] needs 72"):
        load_onnx_graph(path)
    next(e for e in entries if e.key == "length").value = "72"
    extra = entries.add()
    extra.key, extra.value = "offset", "72"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(UntrustedFileError, match=r"'conv\.weight' repeats a key \(\['location', 'offset', 'length', "
                                                 r"'offset'\]\)"):
        load_onnx_graph(path)
