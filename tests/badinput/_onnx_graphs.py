"""Small ONNX graphs that follow unetkit's graph contract (``image`` -> ``probabilities``), built with onnx.helper.

A real ``unetkit export`` takes tens of seconds on a shared CPU; these take milliseconds and are valid graphs of
the same contract (a 3x3 convolution then a softmax over the classes), so the corpus and the fuzz targets can make
one per case, then break it: a flipped byte, a cut, a wrong channel count, weights stored outside the folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def tiny_graph(*, channels: int = 1, classes: int = 2, producer: str = "pytorch", seed: int = 0):  # type: ignore[no-untyped-def]
    """A 2D graph ``image (N, channels, H, W)`` -> ``probabilities (N, classes, H, W)`` (onnx.ModelProto)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weight = numpy_helper.from_array(rng.normal(size=(classes, channels, 3, 3)).astype(np.float32), "conv.weight")
    bias = numpy_helper.from_array(rng.normal(size=classes).astype(np.float32), "conv.bias")
    nodes = [
        helper.make_node("Conv", ["image", "conv.weight", "conv.bias"], ["logits"], pads=[1, 1, 1, 1]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", channels, "height", "width"])
    probs = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", classes, "height", "width"])
    graph = helper.make_graph(nodes, "unetkit_tiny", [image], [probs], initializer=[weight, bias])
    model = helper.make_model(graph, producer_name=producer, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def graph_bytes(**kwargs) -> bytes:  # type: ignore[no-untyped-def]
    return tiny_graph(**kwargs).SerializeToString()


def with_external_weights(path: Path, *, location: str, data_file: Path | None = None, **kwargs) -> None:  # type: ignore[no-untyped-def]
    """Write a tiny graph to ``path`` whose ``conv.weight`` is stored in the file ``location`` names (relative to
    ``path``'s folder, as ONNX resolves it), written at ``data_file`` (default: where ``location`` points)."""
    from onnx import TensorProto

    model = tiny_graph(**kwargs)
    weight = model.graph.initializer[0]
    raw = weight.raw_data or np.asarray(weight.float_data, np.float32).tobytes()
    target = data_file if data_file is not None else path.parent / location
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(raw)
    weight.ClearField("raw_data")
    weight.ClearField("float_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(len(raw)))):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    path.write_bytes(model.SerializeToString())
