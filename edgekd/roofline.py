"""Roofline latency estimates counted from an ONNX graph.

Multiply-accumulates and bytes moved are counted in the graph (shapes by ONNX shape inference at
batch 1) and set against a target's datasheet peak arithmetic rate and memory bandwidth:
``max(2 * MACs / peak ops, bytes / bandwidth)``. An estimate, never a measurement: it ignores
kernel launch and framework overhead, caches and imperfect kernels, so a measured latency is
normally several times the roofline; the ratio says how far a runtime is from the hardware.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, shape_inference

from edgekd.errors import BadInput, first_line
from edgekd.targets import Target

# op type -> index of its weight input; every one of them is a multiply-accumulate kernel
_CONVS = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3}
_MATMULS = {"Gemm": 1, "MatMul": 1, "MatMulInteger": 1, "QLinearMatMul": 3, "QGemm": 3}
_BYTES = {"int8": 1, "fp16": 2, "fp32": 4}


@dataclass(frozen=True)
class GraphCost:
    """Static cost of one batch-1 forward pass of an ONNX model."""

    macs: int
    weight_bytes: int  # every initializer at its stored type
    activation_elems: int  # inputs + outputs of every Conv/Gemm/MatMul, summed (as profile.py)
    int8_weights: bool  # the Conv/Gemm weights are stored as 8-bit integers (quantized model)

    def precision_on(self, target: Target) -> str:
        """The arithmetic the model runs in on ``target``: int8 when quantized; else fp16 under
        TensorRT where the device has FP16 rates, fp32 otherwise."""
        if self.int8_weights:
            return "int8"
        fp16 = target.runtime == "tensorrt" and target.peak_ops_per_s("fp16")
        return "fp16" if fp16 else "fp32"


def batch1_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape at batch 1 (symbolic dimensions of the inputs set to 1)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for value in model.graph.input:
        for dim in value.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.dim_value = 1
    inferred = shape_inference.infer_shapes(model, strict_mode=False)
    shapes = {}
    graph = inferred.graph
    for value in [*graph.input, *graph.value_info, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = tuple(d.dim_value for d in dims)
    for init in graph.initializer:
        shapes[init.name] = tuple(init.dims)
    return shapes


def is_compute(node: onnx.NodeProto) -> bool:
    """Whether ``node`` is a multiply-accumulate kernel (convolution, Gemm, MatMul, float or
    integer)."""
    return node.op_type in _CONVS or node.op_type in _MATMULS


def node_macs(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]]) -> int | None:
    """Multiply-accumulates of one compute node (:func:`is_compute`) given every tensor's shape
    (:func:`batch1_shapes`); None when a shape it needs is unknown."""
    w_name = node.input[{**_CONVS, **_MATMULS}[node.op_type]]
    x, w, y = shapes.get(node.input[0]), shapes.get(w_name), shapes.get(node.output[0])
    if x is None or w is None or y is None:
        return None
    if node.op_type in _CONVS:
        return math.prod(y) * math.prod(w[1:])  # per output: C/groups x kernel
    trans_a = next((a.i for a in node.attribute if a.name == "transA"), 0)
    return math.prod(y) * (x[-2] if trans_a else x[-1])


def graph_cost(model: onnx.ModelProto) -> GraphCost:
    """Count MACs, weight bytes and Conv/Gemm/MatMul activations of ``model`` at batch 1."""
    shapes = batch1_shapes(model)
    inits = {t.name: t for t in model.graph.initializer}
    producers = {out: n for n in model.graph.node for out in n.output}
    macs = acts = 0
    int8 = []
    for node in model.graph.node:
        if not is_compute(node):
            continue
        w_name = node.input[{**_CONVS, **_MATMULS}[node.op_type]]
        x, y = shapes.get(node.input[0]), shapes.get(node.output[0])
        n = node_macs(node, shapes)
        if x is None or y is None or n is None:
            raise BadInput(
                f"{node.name or node.op_type}: shapes unknown after ONNX shape inference"
            )
        macs += n
        acts += math.prod(x) + math.prod(y)
        stored = producers[w_name].input[0] if w_name in producers else w_name
        if stored in inits:
            int8.append(inits[stored].data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8))
    weight_bytes = sum(
        math.prod(t.dims) * np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
        for t in model.graph.initializer
    )
    return GraphCost(macs, weight_bytes, acts, bool(int8) and all(int8))


def roofline(cost: GraphCost, target: Target) -> dict | None:
    """The roofline estimate of ``cost`` on ``target``, or None when the profile lacks the peak
    rate at the model's precision."""
    precision = cost.precision_on(target)
    peak = target.peak_ops_per_s(precision)
    if not peak:
        return None
    moved = cost.weight_bytes + cost.activation_elems * _BYTES[precision]
    compute_s, memory_s = 2 * cost.macs / peak, moved / target.bytes_per_s
    return {
        "target": target.name,
        "precision": precision,
        "macs": cost.macs,
        "bytes": moved,
        "peak_tops": peak / 1e12,
        "bandwidth_gbs": target.bytes_per_s / 1e9,
        "latency_ms": max(compute_s, memory_s) * 1e3,
        "bound": "compute" if compute_s >= memory_s else "memory",
        "estimated": True,
    }


def load_cost(path: str | Path) -> GraphCost:
    """:func:`graph_cost` of the ONNX file at ``path``; one clear error when it is not a model."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf raises several types for a non-model file
        raise BadInput(f"{path}: not an ONNX model ({first_line(e)})") from None
    if not model.graph.node:
        raise BadInput(f"{path}: not an ONNX model (no graph)")
    return graph_cost(model)
