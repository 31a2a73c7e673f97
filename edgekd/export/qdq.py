"""Post-process an exported Q/DQ graph into the form runtimes fuse into integer kernels.

The exporter writes each weight as ``float initializer -> QuantizeLinear -> DequantizeLinear``
and leaves biases in float. Runtimes want ``int8 initializer -> DequantizeLinear`` for weights
and, for ONNX Runtime, int32 biases with scale ``input_scale * weight_scale`` (it fuses a Conv
into QLinearConv only when every input comes from a DequantizeLinear; TensorRT instead rejects
int32 into DequantizeLinear and quantizes float biases itself). Weights stored as int8 also make
the file about 4x smaller. A Clip (ReLU6) right before a QuantizeLinear that saturates where it
would clip is removed, so that the Conv before it fuses.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


class _Graph:
    """Index of a graph's initializers and producers, kept in sync while rewriting."""

    def __init__(self, graph: onnx.GraphProto):
        self.graph = graph
        self.inits = {t.name: t for t in graph.initializer}
        self.producer = {o: n for n in graph.node for o in n.output}

    def array(self, name: str) -> np.ndarray | None:
        """An initializer's or a Constant node's value."""
        t = self.inits.get(name)
        if t is None:
            node = self.producer.get(name)
            if node is not None and node.op_type == "Constant":
                t = next((a.t for a in node.attribute if a.name == "value"), None)
        return None if t is None else numpy_helper.to_array(t)

    def add(self, array: np.ndarray, name: str) -> str:
        tensor = numpy_helper.from_array(array, name)
        self.graph.initializer.append(tensor)
        self.inits[name] = tensor
        return name


def _rename_inputs(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


def _inline_constant_identities(g: _Graph) -> None:
    for node in [n for n in g.graph.node if n.op_type == "Identity" and n.input[0] in g.inits]:
        _rename_inputs(g.graph, node.output[0], node.input[0])
        g.graph.node.remove(node)


def _quantize(w: np.ndarray, scale: np.ndarray, zp: np.ndarray, axis: int) -> np.ndarray:
    shape = [1] * w.ndim
    if scale.ndim:
        shape[axis] = -1
    info = np.iinfo(zp.dtype)
    q = np.round(w / scale.reshape(shape)) + zp.reshape(shape).astype(np.int64)
    return np.clip(q, info.min, info.max).astype(zp.dtype)


def _fold_weight_quantizers(g: _Graph) -> None:
    for node in [n for n in g.graph.node if n.op_type == "QuantizeLinear"]:
        w, scale, zp = (g.array(name) for name in node.input[:3])
        if w is None or scale is None or zp is None:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        name = g.add(_quantize(w, scale, zp, axis), f"{node.output[0]}_weight")
        _rename_inputs(g.graph, node.output[0], name)
        g.graph.node.remove(node)


# Ops that move values without changing them: a DequantizeLinear before them still sets the scale.
TRANSPARENT_OPS = frozenset(
    {"MaxPool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity"}
)


def _dq_scale(g: _Graph, name: str) -> np.ndarray | None:
    node = g.producer.get(name)
    while node is not None and node.op_type in TRANSPARENT_OPS:
        node = g.producer.get(node.input[0])
    if node is None or node.op_type != "DequantizeLinear":
        return None
    return g.array(node.input[1])


def _quantize_biases(g: _Graph) -> None:
    nodes: list[onnx.NodeProto] = []
    for node in g.graph.node:
        nodes.append(node)
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3:
            continue
        bias = g.array(node.input[2])
        sx, sw = _dq_scale(g, node.input[0]), _dq_scale(g, node.input[1])
        if bias is None or sx is None or sw is None or sx.size != 1:
            continue
        scale = (sx.astype(np.float64) * sw.astype(np.float64)).astype(np.float32)
        scale = np.broadcast_to(scale, bias.shape).copy()
        q = np.clip(np.round(bias / scale), -(2**31), 2**31 - 1).astype(np.int32)
        base = f"{node.output[0]}_bias"  # biases may be shared initializers; outputs are unique
        qname = g.add(q, f"{base}_quantized")
        sname = g.add(scale, f"{base}_scale")
        zname = g.add(np.zeros_like(q), f"{base}_zero_point")
        out = f"{base}_dequantized"
        inputs = [qname, sname, zname]
        dq = helper.make_node("DequantizeLinear", inputs, [out], name=f"{base}_dq", axis=0)
        node.input[2] = out
        nodes.insert(len(nodes) - 1, dq)
    del g.graph.node[:]
    g.graph.node.extend(nodes)


def _clip_range(g: _Graph, node: onnx.NodeProto) -> tuple[float, float] | None:
    """The ``[min, max]`` a Clip with constant bounds limits its input to."""
    if node.op_type != "Clip":
        return None
    bounds = [-np.inf, np.inf]
    for i, name in enumerate(node.input[1:3]):
        if name:
            value = g.array(name)
            if value is None:
                return None
            bounds[i] = float(value)
    return bounds[0], bounds[1]


def _drop_clips_before_quantize(g: _Graph) -> None:
    """Remove a Clip whose only consumer is a QuantizeLinear whose range it contains.

    ``Q(clip(x, a, b)) == Q(x)`` when ``a <= scale * (qmin - zp)`` and ``b >= scale * (qmax -
    zp)``: the QuantizeLinear saturates there anyway. Without the Clip (ReLU6), ONNX Runtime
    fuses ``DQ -> Conv -> Q`` into one QLinearConv; with it, it ran Conv+Clip as a float FusedConv
    (measured on ONNX Runtime 1.32 with torchvision's MobileNetV2). A Relu there it removes itself.
    """
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in g.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in g.graph.output}
    for node in list(g.graph.node):
        bounds = _clip_range(g, node)
        users = consumers.get(node.output[0], []) if bounds else []
        if len(users) != 1 or users[0].op_type != "QuantizeLinear" or node.output[0] in outputs:
            continue
        q = users[0]
        scale = g.array(q.input[1])
        zp = g.array(q.input[2]) if len(q.input) > 2 and q.input[2] else np.zeros((), np.uint8)
        if scale is None or zp is None or scale.size != 1 or zp.size != 1:
            continue
        info = np.iinfo(zp.dtype)
        s, z = float(scale.reshape(())), int(zp.reshape(()))
        tol = s / 1024  # a bound within it still rounds to the end of the integer range
        if bounds[0] <= s * (info.min - z) + tol and bounds[1] >= s * (info.max - z) - tol:
            q.input[0] = node.input[0]
            g.graph.node.remove(node)


def _drop_unused_initializers(graph: onnx.GraphProto) -> None:
    used = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def finalize_qdq(model: onnx.ModelProto, int32_bias: bool = True) -> onnx.ModelProto:
    """Store weights as int8 behind DequantizeLinear and, with ``int32_bias``, biases as int32.

    Returns ``model``, changed in place.
    """
    g = _Graph(model.graph)
    _inline_constant_identities(g)
    _fold_weight_quantizers(g)
    _drop_clips_before_quantize(g)
    if int32_bias:
        g.producer = {o: n for n in g.graph.node for o in n.output}
        _quantize_biases(g)
    _drop_unused_initializers(model.graph)
    return model
