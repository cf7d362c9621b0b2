"""Exact rewrites of an exported ONNX graph that let ONNX Runtime run more of it in int8.

ONNX Runtime has no int8 ``ConvTranspose`` kernel: in a quantised U-Net every decoder upsampling runs in float
between a dequantise and a quantise, in NCHW between two layout transposes. :func:`pixel_shuffle_upsampling`
replaces each 2D ``ConvTranspose`` whose kernel equals its stride (the U-Net upsampling: no overlap, no padding,
one group) by the same arithmetic in operations that do have int8 kernels:

* a 1x1 ``Conv`` with ``s * s * C_out`` output channels, channel ``(a * s + b) * C_out + c`` holding output
  pixel ``(s * i + a, s * j + b)`` of channel ``c`` (weights ``W[k, c, a, b]`` reordered, bias tiled);
* the pixel shuffle written in channels-last order: ``Transpose`` to NHWC, ``Reshape`` to ``(N, H, W, s, s, C)``,
  ``Transpose`` to ``(N, H, s, W, s, C)`` (one axis moves, so ONNX Runtime copies contiguous runs of ``s * C``
  values), ``Reshape`` to ``(N, s H, s W, C)`` and ``Transpose`` back to NCHW. ONNX Runtime's layout optimiser
  cancels the outer transposes against the ones it puts around its channels-last int8 convolutions.
  (``DepthToSpace`` says the same, but its CPU kernel shuffles NCHW single values, 3.4 ms for one 512 x 512
  upsampling on the machine this was measured on, against 0.6 ms.)

The width ``s W`` comes from the ``Shape`` of the upsampling's input. After quantisation that input is a
dequantised tensor; :func:`shape_from_quantized` makes each such ``Shape`` read the int8 tensor instead, so no
dequantisation runs just to read a shape.

Both rewrites compute exactly what the graph computed before (the tests compare against the original graph).
"""

from __future__ import annotations

from typing import Any

import numpy as np

ConvTranspose = "ConvTranspose"


def pixel_shuffle_upsampling(model: Any) -> int:
    """Rewrite, in place, every 2D ``ConvTranspose`` with ``kernel == stride`` of ``model`` (an
    ``onnx.ModelProto`` whose weights are initializers) as a 1x1 ``Conv`` plus a channels-last pixel shuffle;
    the number rewritten. Other ``ConvTranspose`` nodes (3D, overlapping, padded, grouped) are left as they are.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    nodes, rewritten = [], 0
    for node in graph.node:
        stride = _upsampling_stride(node, weights)
        if stride is None:
            nodes.append(node)
            continue
        w = numpy_helper.to_array(weights[node.input[1]])
        c_in, c_out, s, p = w.shape[0], w.shape[1], stride, f"{node.name or node.output[0]}_pixel_shuffle"
        conv_w = np.ascontiguousarray(w.transpose(2, 3, 1, 0).reshape(s * s * c_out, c_in, 1, 1))
        graph.initializer.append(numpy_helper.from_array(conv_w, f"{p}_weight"))
        inputs = [node.input[0], f"{p}_weight"]
        if len(node.input) > 2 and node.input[2]:
            bias = numpy_helper.to_array(weights[node.input[2]])
            graph.initializer.append(numpy_helper.from_array(np.tile(bias, s * s), f"{p}_bias"))
            inputs.append(f"{p}_bias")
        for name, values in ((f"{p}_split", [0, 0, 0, s, s, c_out]), (f"{p}_rows", [0, -1]),
                             (f"{p}_stride", [s]), (f"{p}_channels", [c_out])):  # fmt: skip
            graph.initializer.append(numpy_helper.from_array(np.asarray(values, dtype=np.int64), name))
        nodes += [
            helper.make_node("Conv", inputs, [f"{p}_conv"], name=f"{p}_conv", kernel_shape=[1, 1]),
            helper.make_node("Transpose", [f"{p}_conv"], [f"{p}_nhwc"], name=f"{p}_nhwc", perm=[0, 2, 3, 1]),
            helper.make_node("Reshape", [f"{p}_nhwc", f"{p}_split"], [f"{p}_6d"], name=f"{p}_6d"),
            helper.make_node("Transpose", [f"{p}_6d"], [f"{p}_interleaved"], name=f"{p}_interleave",
                             perm=[0, 1, 3, 2, 4, 5]),
            helper.make_node("Shape", [node.input[0]], [f"{p}_width"], name=f"{p}_width", start=3, end=4),
            helper.make_node("Mul", [f"{p}_width", f"{p}_stride"], [f"{p}_out_width"], name=f"{p}_out_width"),
            helper.make_node("Concat", [f"{p}_rows", f"{p}_out_width", f"{p}_channels"], [f"{p}_shape"],
                             name=f"{p}_shape", axis=0),
            helper.make_node("Reshape", [f"{p}_interleaved", f"{p}_shape"], [f"{p}_out_nhwc"], name=f"{p}_merge"),
            helper.make_node("Transpose", [f"{p}_out_nhwc"], list(node.output), name=f"{p}_nchw", perm=[0, 3, 1, 2]),
        ]  # fmt: skip
        rewritten += 1
    if rewritten:
        used = {name for node in nodes for name in node.input}
        kept = [init for init in graph.initializer if init.name in used]
        del graph.node[:], graph.initializer[:]
        graph.node.extend(nodes)
        graph.initializer.extend(kept)
    return rewritten


def _upsampling_stride(node: Any, weights: dict[str, Any]) -> int | None:
    """The stride ``s`` of a 2D, one-group, unpadded ``ConvTranspose`` with an ``s x s`` kernel, else None."""
    from onnx import helper

    if node.op_type != ConvTranspose or len(node.input) < 2 or node.input[1] not in weights:
        return None
    shape = list(weights[node.input[1]].dims)
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    kernel = shape[2:]
    ok = (
        len(kernel) == 2 and kernel[0] == kernel[1] and list(attrs.get("strides", [1, 1])) == kernel
        and attrs.get("group", 1) == 1 and not any(attrs.get("pads", [0])) and not any(attrs.get("output_padding", [0]))
        and all(d == 1 for d in attrs.get("dilations", [1])) and attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")
        and "output_shape" not in attrs
    )  # fmt: skip
    return int(kernel[0]) if ok else None


def shape_from_quantized(model: Any) -> int:
    """Make every ``Shape`` that reads a ``DequantizeLinear`` output read that node's integer input instead
    (same dimensions), and drop dequantisations left without consumers; the number of ``Shape`` nodes moved."""
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    moved = 0
    for node in graph.node:
        source = producers.get(node.input[0]) if node.op_type == "Shape" else None
        if source is not None and source.op_type == "DequantizeLinear":
            node.input[0] = source.input[0]
            moved += 1
    if moved:
        outputs = {o.name for o in graph.output}
        while True:
            consumed = {name for node in graph.node for name in node.input} | outputs
            dead = [n for n in graph.node if n.op_type == "DequantizeLinear" and n.output[0] not in consumed]
            if not dead:
                break
            for n in dead:
                graph.node.remove(n)
    return moved


__all__ = ["pixel_shuffle_upsampling", "shape_from_quantized"]
