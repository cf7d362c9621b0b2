"""The int8 preparation rewrites compute what the graph computed before, and touch only what they can rewrite."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from unetkit.onnx_rewrite import pixel_shuffle_upsampling, shape_from_quantized  # noqa: E402


def _model(nodes: list, initializers: list, outputs: list[str], rank: int = 4) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, [f"{o}{d}" for d in range(rank)]) for o in outputs],
        initializers,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def _transposed(name: str, c_in: int, c_out: int, kernel: int, stride: int, rng: np.random.Generator,
                **attrs: object) -> tuple:  # fmt: skip
    w = numpy_helper.from_array(rng.standard_normal((c_in, c_out, kernel, kernel)).astype(np.float32), f"{name}_w")
    b = numpy_helper.from_array(rng.standard_normal(c_out).astype(np.float32), f"{name}_b")
    node = helper.make_node("ConvTranspose", ["x", w.name, b.name], [name], name=name,
                            kernel_shape=[kernel, kernel], strides=[stride, stride], **attrs)  # fmt: skip
    return node, [w, b]


@pytest.mark.parametrize("stride", [2, 4])
def test_upsampling_becomes_a_1x1_conv_and_a_pixel_shuffle_with_the_same_output(stride: int) -> None:
    rng = np.random.default_rng(0)
    up, up_init = _transposed("up", 3, 5, stride, stride, rng)
    # Overlapping (kernel 3, stride 2) and padded transposed convolutions have no such form: left alone.
    overlap, overlap_init = _transposed("overlap", 3, 2, 3, 2, rng)
    padded, padded_init = _transposed("padded", 3, 2, 2, 2, rng, pads=[1, 1, 1, 1])
    model = _model([up, overlap, padded], up_init + overlap_init + padded_init, ["up", "overlap", "padded"])
    x = rng.standard_normal((2, 3, 5, 7)).astype(np.float32)  # odd, unequal sides: the width comes from Shape
    before = _run(model, x)
    assert pixel_shuffle_upsampling(model) == 1
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("ConvTranspose") == 2 and ops.count("Conv") == 1 and "DepthToSpace" not in ops
    assert "up_w" not in {i.name for i in model.graph.initializer}  # the old weights are gone
    onnx.checker.check_model(model)
    after = _run(model, x)
    assert after[0].shape == (2, 5, 5 * stride, 7 * stride)
    for a, b in zip(before, after, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
    # By hand, one output pixel: out[n, c, s*i + a, s*j + b] = bias[c] + sum_k x[n, k, i, j] * W[k, c, a, b].
    w, bias = (numpy_helper.to_array(t) for t in up_init)
    n, c, i, j, a, b = 1, 4, 3, 6, stride - 1, 1
    assert after[0][n, c, stride * i + a, stride * j + b] == pytest.approx(bias[c] + x[n, :, i, j] @ w[:, c, a, b], abs=1e-5)


def test_a_graph_without_such_upsampling_is_left_as_it_is() -> None:
    rng = np.random.default_rng(1)
    node, init = _transposed("overlap", 3, 2, 3, 2, rng)
    model = _model([node], init, ["overlap"])
    text = model.SerializeToString()
    assert pixel_shuffle_upsampling(model) == 0 and model.SerializeToString() == text


def test_shapes_read_the_integer_tensor_and_unused_dequantisations_go() -> None:
    scale = numpy_helper.from_array(np.asarray(0.1, dtype=np.float32), "scale")
    zero = numpy_helper.from_array(np.asarray(128, dtype=np.uint8), "zero")
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["for_shape"]),  # read by Shape only
        helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["for_both"]),
        helper.make_node("Shape", ["for_shape"], ["shape_a"], start=2),
        helper.make_node("Shape", ["for_both"], ["shape_b"]),
        helper.make_node("Relu", ["for_both"], ["relu"]),
        helper.make_node("Cast", ["shape_a"], ["shape_a_f"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["shape_b"], ["shape_b_f"], to=TensorProto.FLOAT),
    ]
    model = _model(nodes, [scale, zero], ["shape_a_f", "shape_b_f", "relu"], rank=1)
    x = np.random.default_rng(2).standard_normal((1, 3, 4, 6)).astype(np.float32)
    before = _run(model, x)
    assert shape_from_quantized(model) == 2
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("DequantizeLinear") == 1  # the one Relu still reads
    assert all(n.input[0] == "q" for n in model.graph.node if n.op_type == "Shape")
    after = _run(model, x)
    assert after[0].tolist() == [4.0, 6.0] and after[1].tolist() == [1.0, 3.0, 4.0, 6.0]
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)
