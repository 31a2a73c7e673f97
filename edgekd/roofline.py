"""Roofline latency estimates counted from an ONNX graph.

Multiply-accumulates and bytes moved are counted in the graph (shapes by ONNX shape inference at
batch 1) and set against a target's datasheet peak arithmetic rate and memory bandwidth:
``max(2 * MACs / peak ops, bytes / bandwidth)``, for the whole graph at once. The target's
overheads, where its profile gives them, are added to that: one per inference (the runtime call,
input and output copies, synchronisation) and one per layer (a kernel launch or operator
dispatch, counted per Conv/Gemm/MatMul: the ops the runtimes fuse their BatchNorm, activation
and residual Add into), so ``estimate = per_inference + layers * per_layer + roofline``. An
estimate, never a measurement: caches and imperfect kernels are left out, so a measured latency
is still above it; the ratio says how far a runtime is from the hardware.
"""

from __future__ import annotations

import math
import tempfile
from contextlib import chdir
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, shape_inference
from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

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
    layers: int = 0  # Conv/Gemm/MatMul nodes: what the per-layer overhead is counted over

    def precision_on(self, target: Target) -> str:
        """The arithmetic the model runs in on ``target``: int8 when quantized; else fp16 under
        TensorRT where the device has FP16 rates, fp32 otherwise."""
        if self.int8_weights:
            return "int8"
        fp16 = target.runtime == "tensorrt" and target.peak_ops_per_s("fp16")
        return "fp16" if fp16 else "fp32"


def batch1_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape at batch 1 (symbolic dimensions of the inputs set to 1).

    Shapes the graph computes from its input's shape (``x.view(x.size(0), -1)``: Shape ->
    Gather -> Concat -> Reshape; ShuffleNet's channel shuffle: a Div on them) are resolved by
    ONNX Runtime's symbolic shape inference; for a graph with an op it has no rule for (a custom
    domain), by ONNX's own inference with data propagation.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for value in model.graph.input:
        for dim in value.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.dim_value = 1
    try:
        # where it stops short it saves the model (sym_shape_infer_temp.onnx and external data)
        # into the working directory: let that be a folder of its own, deleted afterwards
        with tempfile.TemporaryDirectory(prefix="edgekd-shapes-") as tmp, chdir(tmp):
            inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    except Exception:  # noqa: BLE001 - it raises a bare Exception for ops it has no rule for
        inferred = shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
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
    layers = sum(is_compute(n) for n in model.graph.node)
    return GraphCost(macs, weight_bytes, acts, bool(int8) and all(int8), layers)


def overhead_s(layers: int, target: Target) -> float:
    """The target's fixed costs for one inference of a ``layers``-layer model, in seconds (0 when
    its profile gives no overheads)."""
    o = target.overhead
    return 0.0 if o is None else (o.per_inference_us + layers * o.per_layer_us) * 1e-6


def roofline(cost: GraphCost, target: Target) -> dict | None:
    """The roofline estimate of ``cost`` on ``target``, or None when the profile lacks the peak
    rate at the model's precision. ``latency_ms`` is the roofline alone; ``estimate_ms`` adds
    the target's overheads (``overhead_ms``)."""
    precision = cost.precision_on(target)
    peak = target.peak_ops_per_s(precision)
    if not peak:
        return None
    moved = cost.weight_bytes + cost.activation_elems * _BYTES[precision]
    compute_s, memory_s = 2 * cost.macs / peak, moved / target.bytes_per_s
    roof_s, over_s = max(compute_s, memory_s), overhead_s(cost.layers, target)
    return {
        "target": target.name,
        "precision": precision,
        "macs": cost.macs,
        "bytes": moved,
        "peak_tops": peak / 1e12,
        "bandwidth_gbs": target.bytes_per_s / 1e9,
        "latency_ms": roof_s * 1e3,
        "bound": "compute" if compute_s >= memory_s else "memory",
        "estimated": True,
        "layers": cost.layers,
        "overhead_ms": over_s * 1e3,
        "estimate_ms": (roof_s + over_s) * 1e3,
        "overhead_source": target.overhead.source if target.overhead else None,
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


def try_roofline(path: str | Path, target: Target) -> tuple[dict | None, str | None]:
    """(estimate, None), or (None, why it is unavailable): an estimate never fails a run."""
    try:
        cost = load_cost(path)
    except Exception as e:  # noqa: BLE001 - whatever stops the count, the run goes on without it
        return None, f"the graph could not be counted: {first_line(e)}"
    est = roofline(cost, target)
    if est is None:
        precision = cost.precision_on(target)
        return None, f"the {target.name} profile gives no {precision} peak rate"
    return est, None
