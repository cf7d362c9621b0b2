"""The per-tile pipeline as an ONNX graph, and ONNX Runtime as a Predictor backend.

Graph contract (what ``unetkit export`` writes and ``Predictor(backend="onnx")`` runs):

* input ``image``: float32 ``(N, C, H, W)`` (2D) or ``(N, C, D, H, W)`` (3D), any N and any spatial size
  (the network pads internally to its stride and crops back). The pixels must already be **normalised
  with statistics of the whole image**, per channel, exactly as :func:`unetkit.data.normalize.normalize`
  does with the run's ``data.normalization`` (``zscore``: ``(x - mean_c) / max(std_c, 1e-6)`` with the
  population std; ``minmax``: ``(x - min_c) / max(max_c - min_c, 1e-6)``; ``none``: ``x`` as float32).
  Per-tile statistics would differ from training and from :class:`~unetkit.infer.predictor.Predictor`,
  which normalises the whole image before tiling; so normalisation is left outside the graph.
* output ``probabilities``: float32 ``(N, K, *spatial)``: softmax over the K classes (K >= 2), or the
  sigmoid of the single channel (K == 1). Labels are the argmax over K (K >= 2) or ``p > threshold``.

Tiling, blending and test-time augmentation stay outside the graph (they are the same numpy/torch code
for every backend).

A graph given to ``predict`` / ``evaluate`` / ``serve --onnx`` may come from someone else: it is read by
:func:`load_onnx_graph` (size limit, parse, checker, external data only inside the model's folder) and held to
the run by :func:`check_graph_contract` (input channels, classes, spatial dimensions) before ONNX Runtime sees it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from unetkit.runtime.onnx_pipeline import INPUT_NAME, OUTPUT_NAME
from unetkit.runtime.onnx_pipeline import ProbabilityModel as ProbabilityModel  # noqa: F401 (moved; kept importable)
from unetkit.runtime.onnx_pipeline import export_pipeline as export_pipeline  # noqa: F401
from unetkit.runtime.onnx_pipeline import export_run_graph as export_run_graph  # noqa: F401

if TYPE_CHECKING:
    import onnx

# What an ONNX graph given to unetkit may be: its exports are a few MiB to a few hundred (protobuf itself stops at
# 2 GiB); weights stored beside it (external data) are counted separately, each file once.
ONNX_LIMITS = {"max_bytes": 1024 * 2**20, "max_external_bytes": 4096 * 2**20}
# Who writes the graphs unetkit runs: torch.onnx (`unetkit export`) and ONNX Runtime's quantiser (`--int8`).
# A graph from another producer is run (its shapes must still fit the run), with a warning.
KNOWN_PRODUCERS = ("pytorch", "onnx.quantize")


class ForeignGraphWarning(UserWarning):
    """An ONNX graph that ``unetkit export`` did not write (another producer): shapes fit, contents unvouched."""


def load_onnx_graph(path: str | os.PathLike[str], *, max_bytes: int = ONNX_LIMITS["max_bytes"]) -> onnx.ModelProto:
    """Read an ONNX graph that may come from someone else; nothing in it is run.

    The file is read within ``max_bytes``, parsed, every tensor stored outside it (external data) must name a file
    inside the model's folder (relative, no ``..``, no link leading out) and lie within that file, and the ONNX
    checker must accept the graph. A graph from a producer other than :data:`KNOWN_PRODUCERS` gives a
    :class:`ForeignGraphWarning`.

    Args:
        path: the ``.onnx`` file.
        max_bytes: the largest graph file accepted.

    Returns:
        The parsed graph (external data not loaded).

    Raises:
        UntrustedFileError: (a ValueError) missing, too large, not ONNX (truncated, corrupt, another format),
            no graph, external data outside the folder or missing or too large, or refused by the checker;
            one line naming the file.
    """
    import onnx
    from google.protobuf.message import DecodeError

    from unetkit.untrusted import UntrustedFileError, read_bytes_limited

    data = read_bytes_limited(path, what="ONNX model", max_bytes=max_bytes)
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeWarning, ValueError) as err:
        raise UntrustedFileError(f"{path}: not an ONNX model, truncated or corrupt (protobuf: {err})") from None
    if not model.graph.node or not model.graph.output:
        raise UntrustedFileError(f"{path}: not an ONNX model, truncated or corrupt (no graph nodes or outputs found)")
    external = _check_external_data(model, Path(path))
    try:  # the checker resolves external data from the model's folder only when given the path
        onnx.checker.check_model(str(path) if external else model)
    except Exception as err:  # noqa: BLE001 - ValidationError, and the C++ checker's own errors
        reason = " ".join(str(err).split())[:300]
        raise UntrustedFileError(f"{path}: not a valid ONNX graph ({type(err).__name__}: {reason})") from None
    if model.producer_name not in KNOWN_PRODUCERS:
        warnings.warn(ForeignGraphWarning(
            f"{path}: written by {model.producer_name or 'an unnamed producer'!r}, not by `unetkit export`; it is run "
            "because its inputs and outputs fit the run, but what it computes is not checked"), stacklevel=2)
    return model


def check_graph_contract(
    model: onnx.ModelProto, *, path: str | os.PathLike[str], in_channels: int, classes: int | None, spatial_dims: int
) -> None:
    """Refuse a graph whose input or output does not fit the run (the contract in the module docstring).

    Args:
        model: the graph (:func:`load_onnx_graph`).
        path: its file, for the message.
        in_channels: the run's image channels C.
        classes: the run's classes K (the output's channels); None: not checked.
        spatial_dims: 2 or 3.

    Raises:
        UntrustedFileError: not one float input ``image`` of rank ``spatial_dims + 2`` with C channels, or no float
            output ``probabilities`` of that rank with K channels (a symbolic channel dimension is not checked).
    """
    from unetkit.untrusted import UntrustedFileError

    initializers = {t.name for t in model.graph.initializer}
    inputs = {i.name: i for i in model.graph.input if i.name not in initializers}
    outputs = {o.name: o for o in model.graph.output}
    if list(inputs) != [INPUT_NAME] or OUTPUT_NAME not in outputs:
        raise UntrustedFileError(
            f"{path}: expected an ONNX graph with input {INPUT_NAME!r} and output {OUTPUT_NAME!r} (written by "
            f"`unetkit export`), got inputs {sorted(inputs)[:5]} and outputs {sorted(outputs)[:5]}"
        )
    rank = spatial_dims + 2
    for value, channels, what in ((inputs[INPUT_NAME], in_channels, "input channel(s)"),
                                  (outputs[OUTPUT_NAME], classes, "output class(es)")):  # fmt: skip
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
        if tensor.elem_type != 1:  # onnx.TensorProto.FLOAT
            raise UntrustedFileError(f"{path}: {value.name!r} is not float32 (ONNX element type {tensor.elem_type})")
        if len(dims) != rank:
            raise UntrustedFileError(f"{path}: {value.name!r} has {len(dims)} dimensions; this run's {spatial_dims}D "
                                     f"model needs {rank} (N, C, *spatial)")
        if channels is not None and dims[1] is not None and dims[1] != channels:
            raise UntrustedFileError(f"{path}: the graph has {dims[1]} {what}, this run's model has {channels}; it "
                                     "was exported from another run")


def _check_external_data(model: onnx.ModelProto, path: Path) -> bool:
    """Every tensor stored outside ``path`` names an existing file inside its folder and lies within it; returns
    whether there is any."""
    from unetkit.untrusted import UntrustedFileError, inside_folder

    sizes: dict[Path, int] = {}
    for tensor in _all_tensors(model):
        if tensor.data_location != 1:  # onnx.TensorProto.EXTERNAL
            continue
        keys = [e.key for e in tensor.external_data]
        if len(set(keys)) != len(keys):  # readers differ on which duplicate wins: refuse rather than guess
            raise UntrustedFileError(f"{path}: external data of tensor {tensor.name[:60]!r} repeats a key ({keys})")
        entries = {e.key: e.value for e in tensor.external_data}
        where = inside_folder(path.parent, entries.get("location", ""), source=path,
                              what=f"external data of tensor {tensor.name[:60]!r}")  # fmt: skip
        if not where.is_file():
            raise UntrustedFileError(f"{path}: external data file {entries.get('location')!r} not found beside it")
        size = sizes.setdefault(where, where.stat().st_size)
        try:
            offset, length = int(entries.get("offset", 0)), int(entries.get("length", size))
        except ValueError:
            raise UntrustedFileError(f"{path}: external data of {tensor.name[:60]!r} has a non-integer offset or "
                                     "length") from None
        if offset < 0 or length < 0 or offset + length > size:
            raise UntrustedFileError(f"{path}: external data of {tensor.name[:60]!r} lies outside "
                                     f"{entries.get('location')!r} ({offset}+{length} > {size} bytes)")
        needed = _tensor_bytes(tensor)
        if needed is not None and needed != length:
            raise UntrustedFileError(f"{path}: external data of {tensor.name[:60]!r} is {length} bytes, its shape "
                                     f"{list(tensor.dims)[:8]} needs {needed}")
    if sum(sizes.values()) > ONNX_LIMITS["max_external_bytes"]:
        raise UntrustedFileError(f"{path}: its external data is {sum(sizes.values()) / 2**20:.0f} MiB, over the "
                                 f"{ONNX_LIMITS['max_external_bytes'] / 2**20:.0f} MiB limit")
    return bool(sizes)


# Bytes per element of the ONNX element types whose size is fixed and whole (float, int8..int64, bool, half ...);
# packed sub-byte types and strings are not checked.
_ITEM_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}


def _tensor_bytes(tensor: Any) -> int | None:
    """The bytes a tensor's shape and element type need (None for the types not in ``_ITEM_BYTES``)."""
    import math

    itemsize = _ITEM_BYTES.get(tensor.data_type)
    return None if itemsize is None else math.prod(tensor.dims) * itemsize


def _all_tensors(model: onnx.ModelProto) -> Iterator[Any]:
    """Every TensorProto of ``model``: initializers, sparse tensors and node attributes, subgraphs and functions
    included (iterative)."""
    graphs = [model.graph]
    nodes = [node for function in model.functions for node in function.node]
    while graphs or nodes:
        if graphs:
            graph = graphs.pop()
            yield from graph.initializer
            for sparse in graph.sparse_initializer:
                yield from (sparse.values, sparse.indices)
            nodes.extend(graph.node)
            continue
        for attribute in nodes.pop().attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            for sparse in [*([attribute.sparse_tensor] if attribute.HasField("sparse_tensor") else []),
                           *attribute.sparse_tensors]:
                yield from (sparse.values, sparse.indices)
            if attribute.HasField("g"):
                graphs.append(attribute.g)
            graphs.extend(attribute.graphs)


class OnnxTileRunner:
    """Run an exported pipeline on batches of tiles: ``(B, C, *tile)`` torch -> ``(B, K, *tile)`` probabilities.

    Args:
        path: ``.onnx`` file following the graph contract in the module docstring.
        threads: ONNX Runtime intra-op threads (default: its own choice, one per physical core).
        graph: the graph already read from ``path`` by :func:`load_onnx_graph` (then given to ONNX Runtime as
            read and checked, unless it keeps weights in external files, which ONNX Runtime reads from the folder).

    Raises:
        FileNotFoundError: no such file.
        ValueError: ONNX Runtime cannot load the graph, or it does not have one ``image`` input and a
            ``probabilities`` output.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, threads: int | None = None, graph: onnx.ModelProto | None = None
    ) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such ONNX model")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        # ONNX Runtime's workers spin after each run by default, waiting for the next one; in a Predictor the
        # next thing to run is blending, shifting and labelling in torch/numpy on the same cores, which the
        # spinning slows down (int8 graph, 512 x 512 slices, 2 cores: 34.6 -> 31.3 ms per image).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # ORT logs a failed load to stderr on its own (several lines); the ValueError below says it in one.
        options.log_severity_level = 4
        external = graph is not None and any(t.data_location == 1 for t in _all_tensors(graph))
        source = graph.SerializeToString() if graph is not None and not external else str(path)
        try:
            self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 - ORT's errors (Fail, InvalidGraph, ...) derive from Exception
            if not type(err).__module__.startswith("onnxruntime"):
                raise
            raise ValueError(f"{path}: ONNX Runtime cannot load this graph ({_one_line(err)})") from None
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if inputs != [INPUT_NAME] or OUTPUT_NAME not in outputs:
            raise ValueError(
                f"{path}: expected an ONNX graph with input {INPUT_NAME!r} and output {OUTPUT_NAME!r} "
                f"(written by `unetkit export`), got inputs {inputs} and outputs {outputs}"
            )
        self.path = path

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(batch.detach().cpu().numpy(), dtype=np.float32)
        try:
            (probs,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: x})
        except Exception as err:  # noqa: BLE001 - a graph that loads but fails on a real batch (foreign graphs)
            if not type(err).__module__.startswith("onnxruntime"):
                raise
            raise RuntimeError(f"{self.path}: ONNX Runtime failed on a batch of shape {tuple(x.shape)} "
                               f"({_one_line(err)})") from None
        return torch.from_numpy(probs)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:300] or type(err).__name__
