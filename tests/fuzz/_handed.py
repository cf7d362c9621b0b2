"""Fuzz targets for the files people hand each other (issue 31): plans written to expand (YAML anchors/aliases,
tags, nesting), ONNX graphs (mutated, spliced, with external data), and a checkpoint's config.json / state.json
(JSON-aware edits: a leaf replaced by NaN, a huge integer, a deep list ...). Registered into ``_targets.TARGETS``.

Grammar-aware where it is cheap: the seeds are valid files of each kind (a real plan, a graph of unetkit's
contract built with onnx.helper, a real checkpoint and training state), edited by what their grammar allows, then
optionally byte-mutated like the image seeds.
"""

from __future__ import annotations

import json
import math
import tempfile
import warnings
from pathlib import Path
from typing import Any

from _targets import DOCUMENTED, Target, _documented, _real_plan_bytes, mutate, mutations
from hypothesis import strategies as st

BADINPUT = Path(__file__).resolve().parents[1] / "badinput"
# What unetkit.cli.main prints as one line: a library error beyond ValueError / OSError (an ONNX Runtime failure
# on a batch is a RuntimeError naming the graph; a missing mapping key a KeyError).
CLI_DOCUMENTED = (ValueError, OSError, RuntimeError, KeyError)


# -- YAML plans --------------------------------------------------------------------------------------------
_TAGS = ["!!python/object/apply:os.system ['true']", "!!binary aGVsbG8=", "!!set {a, b}", "!!timestamp 2001-12-14",
         "!!omap [a: 1]", "!!float .nan", "!!int 0x7fffffffffffffffffff", "!!str 1", "!!null ''", "!unknown x",
         ".inf", "-.inf", ".nan", "0b" + "1" * 80, "1" * 5000, "~", "{}", "[]"]  # fmt: skip
_PLACES = ["train:\n  labels_keys: {}\n", "infer:\n  tile_size: {}\n", "model:\n  kwargs: {}\n", "data: {}\n",
           "train: {}\n", "{}\n"]  # fmt: skip


@st.composite
def yaml_plans(draw: st.DrawFn) -> bytes:
    """A plan that expands (alias levels x fan-out, maybe recursive), a real plan with anchors/aliases/merge keys
    and tags spliced into its lines, or deep nesting; optionally byte-mutated."""
    kind = draw(st.sampled_from(["bomb", "anchored", "deep"]))
    if kind == "bomb":
        levels, fanout = draw(st.integers(1, 14)), draw(st.integers(1, 12))
        lines = [f"a0: &a0 [{', '.join(['x'] * fanout)}]"]
        lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * fanout)}]" for i in range(1, levels)]
        if draw(st.booleans()):  # an alias inside its own anchor
            lines.append(f"r: &r [{', '.join(['*r'] * fanout)}]")
        text = "\n".join(lines) + "\n" + draw(st.sampled_from(_PLACES)).format(f"*a{levels - 1}")
    elif kind == "anchored":
        lines = _real_plan_bytes().decode().splitlines()
        values = [i for i, line in enumerate(lines) if ": " in line]
        anchored = draw(st.lists(st.sampled_from(values), min_size=1, max_size=4, unique=True))
        for i in anchored:  # anchors first, so that most aliases below name one (else: an undefined alias)
            key, _, value = lines[i].partition(": ")
            lines[i] = f"{key}: &n{i} {value}"
        for _ in range(draw(st.integers(1, 6))):
            i = draw(st.sampled_from(values))
            key, _, value = lines[i].partition(": ")
            indent = " " * (len(key) - len(key.lstrip()))
            target = draw(st.sampled_from(anchored) | st.integers(0, len(lines)))
            edit = draw(st.sampled_from(["alias", "alias", "merge", "tag"]))
            if edit == "alias":
                lines[i] = f"{key}: *n{target}"
            elif edit == "merge":
                lines.insert(i, f"{indent}<<: *n{target}")
            else:
                lines[i] = f"{key}: {draw(st.sampled_from(_TAGS))}"
        text = "\n".join(lines) + "\n"
    else:
        depth = draw(st.integers(2, 3000))
        opener, closer = draw(st.sampled_from([("[", "]"), ("{a: ", "}"), ("- ", "")]))
        body = opener * depth + "1" + closer * depth if opener != "- " else "".join(
            "  " * i + "- " + ("\n" if i < depth - 1 else "1\n") for i in range(min(depth, 400)))
        text = draw(st.sampled_from(_PLACES)).format(body) if opener != "- " else "train:\n  patch_size:\n" + body
    data = text.encode()
    return mutate(data, draw(mutations())) if draw(st.integers(0, 3)) == 0 else data


def run_yaml_plan(data: bytes, folder: Path) -> None:
    """Plan.load: only documented errors; a plan that loads is small (its aliases were bounded)."""
    from unetkit.config import Plan

    path = folder / "plan.yaml"
    path.write_bytes(data)
    try:
        plan = Plan.load(path)
    except DOCUMENTED:
        return
    assert len(json.dumps(plan.to_dict(), default=str)) < 64 * 2**20


YAML_PLANS = Target("yaml_plans", yaml_plans(), run_yaml_plan)


# -- ONNX graphs -------------------------------------------------------------------------------------------
_LOCATIONS = ["w.bin", "./w.bin", "sub/../w.bin", "../w.bin", "/etc/hostname", "//w.bin", "C:\\w.bin", "link.bin",
              "missing.bin", "", "w.bin\x00x", "sub/w.bin", "..", "."]  # fmt: skip


@st.composite
def onnx_graphs(draw: st.DrawFn):  # type: ignore[no-untyped-def]
    """(graph kwargs, external-data location or None, offset/length edits, byte mutations, splices)."""
    kwargs = draw(st.sampled_from([{}, {"channels": 3}, {"classes": 5}, {"classes": 1}, {"producer": "somebody"}]))
    location = draw(st.none() | st.sampled_from(_LOCATIONS))
    extents = draw(st.none() | st.tuples(st.sampled_from(["0", "-1", "8", "72", "2000", "x", "1e3", str(2**63)]),
                                         st.sampled_from(["0", "-8", "8", "72", "73", "10**9", str(2**64)])))
    # Most examples keep a parseable graph (so that the checker, the contract and ONNX Runtime are reached).
    edits = draw(mutations()) if draw(st.integers(0, 3)) == 0 else []
    splice = st.tuples(st.integers(0, 2**16), st.integers(0, 2**16), st.integers(0, 64))
    splices = draw(st.lists(splice, min_size=1, max_size=2)) if draw(st.integers(0, 3)) == 0 else []
    return kwargs, location, extents, edits, splices


def _graph_files(example, folder: Path) -> Path:  # type: ignore[no-untyped-def]
    import os
    import sys

    sys.path.insert(0, str(BADINPUT))
    from _onnx_graphs import graph_bytes, with_external_weights

    kwargs, location, extents, edits, splices = example
    path = folder / "model.onnx"
    if location is None:
        data = graph_bytes(**kwargs)
    else:
        (folder / "sub").mkdir(exist_ok=True)
        if not (folder / "link.bin").is_symlink():
            os.symlink("/etc/hostname", folder / "link.bin")
        with_external_weights(path, location=location, data_file=folder / "w.bin", **kwargs)
        data = path.read_bytes()
        if extents is not None:  # the offset / length strings, same length or not: the protobuf is re-encoded
            import onnx

            model = onnx.ModelProto.FromString(data)
            for entry in model.graph.initializer[0].external_data:
                if entry.key in ("offset", "length"):
                    entry.value = extents[0] if entry.key == "offset" else extents[1]
            data = model.SerializeToString()
    data = mutate(data, edits) if edits else data
    for start, source, length in splices:  # a slice of the graph copied over another place in it
        buf = bytearray(data)
        if buf:
            s, t = start % len(buf), source % len(buf)
            buf[s : s + length] = buf[t : t + length]
        data = bytes(buf)
    path.write_bytes(data)
    return path


def run_onnx(example, folder: Path) -> None:  # type: ignore[no-untyped-def]
    """load_onnx_graph -> check_graph_contract -> ONNX Runtime session -> one small batch, as `predict --onnx` does:
    only the CLI's one-line errors (a graph that runs returns probabilities of the declared shape)."""
    import torch

    from unetkit.infer.onnx_backend import (
        ForeignGraphWarning,
        OnnxTileRunner,
        check_graph_contract,
        load_onnx_graph,
    )

    path = _graph_files(example, folder)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ForeignGraphWarning)
            graph = load_onnx_graph(path)
        check_graph_contract(graph, path=path, in_channels=1, classes=2, spatial_dims=2)
        runner = OnnxTileRunner(path, graph=graph, threads=1)
        probs = runner(torch.zeros(1, 1, 8, 8))
    except CLI_DOCUMENTED:
        return
    assert probs.shape[1] == 2 and probs.shape[0] == 1


ONNX = Target("onnx", onnx_graphs(), run_onnx)


# -- checkpoint JSON ---------------------------------------------------------------------------------------
_ODD = [math.nan, math.inf, -math.inf, 2**70, -(2**63), 10**30, 0, -1, 1.5, True, None, "", "x" * 300, [], {},
        [[[[[[[[[[]]]]]]]]]], {"a": {"b": {"c": 1}}}, "../evil.pt", "state.safetensors.0", "/etc/passwd"]  # fmt: skip


@st.composite
def checkpoint_json(draw: st.DrawFn):  # type: ignore[no-untyped-def]
    """(which file, JSON-aware edits: (leaf index, replacement or a key deleted), byte mutations)."""
    which = draw(st.sampled_from(["config.json", "state.json"]))
    edits = draw(st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(_ODD) | st.just("<delete>")),
                          min_size=1, max_size=3))  # fmt: skip
    return which, edits, draw(mutations()) if draw(st.integers(0, 3)) == 0 else []


def _leaves(value: Any, path: tuple = ()) -> list[tuple]:
    if isinstance(value, dict):
        return [path] + [p for k, v in value.items() for p in _leaves(v, (*path, k))]
    if isinstance(value, list):
        return [path] + [p for i, v in enumerate(value) for p in _leaves(v, (*path, i))]
    return [path]


def edit_json(doc: Any, edits: list[tuple]) -> Any:
    """``doc`` with each edit applied: the node at leaf index ``i % n`` replaced (or deleted from its parent)."""
    import copy

    doc = copy.deepcopy(doc)
    for index, replacement in edits:
        paths = [p for p in _leaves(doc) if p]
        if not paths:
            return replacement if replacement != "<delete>" else doc
        *parent_path, last = paths[index % len(paths)]
        parent = doc
        for key in parent_path:
            parent = parent[key]
        if replacement == "<delete>":
            del parent[last]
        else:
            parent[last] = copy.deepcopy(replacement)
    return doc


_STATE: dict[str, Path] = {}


def _checkpoint_seed() -> Path:
    """A real checkpoint folder (config.json + weights) and a real training state (state.json + tensors)."""
    if "dir" not in _STATE:
        import torch

        import unetkit
        from unetkit.train.checkpoint import save_training_state

        folder = Path(tempfile.mkdtemp(prefix="unetkit-fuzz-state-"))
        model = unetkit.create_model("unet", in_channels=1, classes=2, encoder="plain", depth=2, width=4)
        model.save_pretrained(folder)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        model(torch.zeros(1, 1, 16, 16)).sum().backward()
        optimizer.step()
        save_training_state(folder, model=model, optimizer=optimizer, ema=None, scalars={"step": 3, "best": 0.5})
        _STATE["dir"] = folder
    return _STATE["dir"]


def run_checkpoint_json(example, folder: Path) -> None:  # type: ignore[no-untyped-def]
    """load_model (config.json) / load_training_state (state.json) on edited copies: only the CLI's one-line errors."""
    import shutil

    import torch

    import unetkit
    from unetkit.train.checkpoint import load_training_state

    which, edits, byte_edits = example
    seed = _checkpoint_seed()
    work = folder / "ckpt"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(seed, work)
    data = json.dumps(edit_json(json.loads((seed / which).read_text()), edits)).encode()
    (work / which).write_bytes(mutate(data, byte_edits) if byte_edits else data)
    if which == "config.json":
        _documented(lambda: unetkit.load_model(work))
        return
    model = unetkit.create_model("unet", in_channels=1, classes=2, encoder="plain", depth=2, width=4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an older state's batch-sampling warning
        try:
            load_training_state(work, model=model, optimizer=optimizer, ema=None)
        except CLI_DOCUMENTED:
            return


CHECKPOINT_JSON = Target("checkpoint_json", checkpoint_json(), run_checkpoint_json)

HANDED = {t.name: t for t in (YAML_PLANS, ONNX, CHECKPOINT_JSON)}
