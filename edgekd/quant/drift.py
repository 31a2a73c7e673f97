"""Drift triage: where the fake-quant PyTorch student and the deployed INT8 ONNX model part ways.

For every Conv/Gemm layer, the tensor that the next layer consumes (after the layer's ReLU and
its QuantizeLinear/DequantizeLinear pair, where it has them) is computed twice: by the fx
fake-quant student, and by ONNX Runtime running the sub-model of the INT8 ONNX file from the
graph input up to that tensor, with graph optimizations on, so the fused integer kernels
(QLinearConv, QGemm) run as deployed. Each layer is named by its student module: the ONNX
Conv/Gemm nodes run in the order of the student's Conv2d/Linear calls, and the TorchScript
exporter names each after the module scope it ran in, relative to its parent and made unique
with a suffix ("/features/features.2/Conv", "/conv.0.0_3/Conv" for ``features.3.conv.0.0``):
the k-th node is matched to the k-th module call whose name ends with that scope.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import shape_inference, utils
from torch import fx, nn
from torch.nn.utils import parametrize

from edgekd.device.ort import CPU, OrtSession
from edgekd.errors import BadInput
from edgekd.quant.fakequant import ActFakeQuant
from edgekd.quant.prepare import is_fused_activation

LAYER_OPS = ("Conv", "Gemm")
Consumers = dict[str, list[onnx.NodeProto]]  # tensor -> the nodes reading it
Producers = dict[str, onnx.NodeProto]  # tensor -> the node writing it
BATCH = 64
METHOD = (
    "per layer, the tensor the next layer consumes (after its ReLU/ReLU6 and Q/DQ): PyTorch fake-quant "
    "student vs ONNX Runtime on the INT8 model's sub-graph up to that tensor, optimizations on "
    "(fused integer kernels, as deployed); added_rel_l2 = rel_l2 minus the largest rel_l2 of "
    "the layers feeding it"
)


@dataclass(frozen=True)
class Point:
    """A Conv/Gemm layer and the tensor that the next layer consumes from it, in both graphs."""

    module: str  # the student's module name
    op: str  # Conv or Gemm
    tensor: str  # the ONNX tensor
    node: str  # the fx node computing the same tensor
    quantized: bool
    upstream: tuple[str, ...]  # modules of the nearest measured layers feeding this one


def _scope_matches(node: onnx.NodeProto, module: str) -> bool:
    """Whether ``node`` ran in ``module``: its last scope ("conv.0.0_3", "conv_pw_1"), without or
    with the exporter's "_N" suffix, ends ``module``'s dotted name."""
    parts = node.name.split("/")
    if len(parts) < 3:
        return False
    scope = parts[-2]
    names = {scope, re.sub(r"_\d+$", "", scope)}
    return any(module == n or module.endswith("." + n) for n in names)


def _only_consumer(consumers: Consumers, tensor: str) -> onnx.NodeProto | None:
    users = consumers.get(tensor, [])
    return users[0] if len(users) == 1 else None


def _onnx_point(consumers: Consumers, node: onnx.NodeProto) -> tuple[str, list[str]]:
    """The tensor after ``node``'s ReLU/ReLU6 and Q/DQ pair (those it has), and the steps taken.

    The export drops a ReLU6 (Clip) that its QuantizeLinear makes redundant, so only the "quant"
    step is compared with the student's."""
    tensor, steps = node.output[0], []
    nxt = _only_consumer(consumers, tensor)
    if nxt is not None and nxt.op_type in ("Relu", "Clip"):
        tensor = nxt.output[0]
        nxt = _only_consumer(consumers, tensor)
    if nxt is not None and nxt.op_type == "QuantizeLinear":
        dq = _only_consumer(consumers, nxt.output[0])
        if dq is not None and dq.op_type == "DequantizeLinear":
            tensor, steps = dq.output[0], [*steps, "quant"]
    return tensor, steps


def _only_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 and users[0].op != "output" else None


def _is_fake_quant(gm: fx.GraphModule, node: fx.Node) -> bool:
    return isinstance(gm.get_submodule(node.target), ActFakeQuant)


def _fx_point(gm: fx.GraphModule, node: fx.Node) -> tuple[fx.Node, list[str]]:
    """The fx twin of :func:`_onnx_point`: through a ReLU, then an activation fake-quant."""
    steps: list[str] = []
    nxt = _only_user(node)
    if nxt is not None and is_fused_activation(gm, nxt):
        node = nxt
        nxt = _only_user(node)
    if nxt is not None and nxt.op == "call_module" and _is_fake_quant(gm, nxt):
        node, steps = nxt, [*steps, "quant"]
    return node, steps


def _upstream(producers: Producers, start: str, measured: dict[str, str]) -> tuple[str, ...]:
    """Modules of the measured tensors reached walking back from ``start``, stopping at each."""
    found, seen, stack = set(), set(), [start]
    while stack:
        tensor = stack.pop()
        if tensor in seen:
            continue
        seen.add(tensor)
        if tensor in measured:
            found.add(measured[tensor])
        elif tensor in producers:
            stack.extend(t for t in producers[tensor].input if t)
    return tuple(sorted(found))


def layer_points(student: fx.GraphModule, model: onnx.ModelProto) -> tuple[list[Point], list[str]]:
    """Every Conv/Gemm of ``model`` matched to its student module, in execution order; and the
    student's Conv2d/Linear modules that have no such node (not compared)."""
    graph = model.graph
    producers = {o: n for n in graph.node for o in n.output}
    consumers: Consumers = {}
    for n in graph.node:
        for t in n.input:
            consumers.setdefault(t, []).append(n)
    calls = [
        n for n in student.graph.nodes
        if n.op == "call_module" and isinstance(student.get_submodule(n.target), nn.Conv2d | nn.Linear)
    ]  # fmt: skip
    layers = {n.target for n in calls}
    points: list[Point] = []
    measured: dict[str, str] = {}  # tensor -> module
    pending = iter(calls)
    call = next(pending, None)
    for node in graph.node:
        if call is None or node.op_type not in (*LAYER_OPS, "MatMul"):
            continue
        if not _scope_matches(node, call.target):
            continue
        if node.op_type == "MatMul":  # a Linear on a 3-D+ input: MatMul + Add, not compared
            call = next(pending, None)
            continue
        module = call.target
        tensor, steps = _onnx_point(consumers, node)
        twin, fx_steps = _fx_point(student, call)
        if steps != fx_steps:
            raise BadInput(
                f"student_int8.onnx does not match the fake-quant student at {module} (ONNX: "
                f"{'+'.join([node.op_type, *steps])}, PyTorch: {'+'.join(['layer', *fx_steps])}); "
                "rerun edgekd export on the run folder"
            )
        upstream = _upstream(producers, node.input[0], measured)
        quantized = parametrize.is_parametrized(student.get_submodule(module), "weight")
        points.append(Point(module, node.op_type, tensor, twin.name, quantized, upstream))
        measured[tensor] = module
        call = next(pending, None)
    missing = sorted(layers - set(measured.values()))
    return points, missing


def _session(model: onnx.ModelProto, providers: Sequence[str]) -> OrtSession:
    """An optimized session (every optimization: what ships), as the runners make."""
    return OrtSession(model.SerializeToString(), providers, name=model.graph.name or "sub-model")


def _sub_sessions(
    model: onnx.ModelProto, points: list[Point], providers: Sequence[str]
) -> list[OrtSession]:
    """One session per point on the sub-model from the graph input up to the point's tensor.

    Why not one session on the whole model with the points added as graph outputs: ORT fuses
    DQ -> Conv -> (Relu) -> Q into QLinearConv only when the intermediate tensors have no other
    consumer. Probe (ORT 1.32): with a DequantizeLinear output added as a graph output the
    QLinearConv fusions stayed (and the outputs matched), but with a Conv or Relu output added,
    that layer ran as a float FusedConv/Conv, i.e. other numerics than the deployed model's.
    """
    inferred = shape_inference.infer_shapes(model)
    extractor = utils.Extractor(inferred)
    inputs = _input_names(model)
    return [_session(extractor.extract_model(inputs, [p.tensor]), providers) for p in points]


def _input_names(model: onnx.ModelProto) -> list[str]:
    inits = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


class _Recorder(fx.Interpreter):
    """Runs the fx student and keeps the outputs of the nodes named in ``keep``."""

    def __init__(self, gm: fx.GraphModule, keep: set[str]):
        super().__init__(gm)
        self.keep = keep
        self.values: dict[str, np.ndarray] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        if n.name in self.keep:
            self.values[n.name] = out.detach().numpy()
        return out


class _Stats:
    """Running sums for the comparison of one tensor over batches (``out`` vs ``ref``)."""

    def __init__(self) -> None:
        self.diff2 = self.ref2 = self.out2 = self.dot = self.max_abs = 0.0

    def add(self, out: np.ndarray, ref: np.ndarray) -> None:
        if out.shape != ref.shape:
            raise RuntimeError(f"shape mismatch: ONNX Runtime {out.shape}, PyTorch {ref.shape}")
        o, r = out.astype(np.float64).ravel(), ref.astype(np.float64).ravel()
        d = o - r
        self.diff2 += float(d @ d)
        self.ref2 += float(r @ r)
        self.out2 += float(o @ o)
        self.dot += float(o @ r)
        self.max_abs = max(self.max_abs, float(np.abs(d).max(initial=0.0)))

    def metrics(self) -> dict[str, float]:
        """max |diff|, relative L2 error ||out - ref|| / ||ref||, cosine similarity."""
        norms = math.sqrt(self.out2) * math.sqrt(self.ref2)
        if norms > 0:
            cosine = min(1.0, max(-1.0, self.dot / norms))
        else:
            cosine = 1.0 if self.out2 == self.ref2 else 0.0
        return {
            "max_abs_diff": self.max_abs,
            "rel_l2": math.sqrt(self.diff2) / max(math.sqrt(self.ref2), 1e-12),
            "cosine": cosine,
        }


def tensorrt_status() -> str:
    """Whether TensorRT could be compared here; it is not, yet."""
    try:
        import tensorrt
    except ImportError:
        return "not installed"
    return (
        f"not compared: TensorRT {tensorrt.__version__} is installed, but edgekd diff compares "
        "only ONNX Runtime so far"
    )


def _rank(layers: list[dict[str, Any]]) -> list[str]:
    """Module names by the relative error each layer adds, largest first (stable: ties keep
    execution order)."""
    return [entry["module"] for entry in sorted(layers, key=lambda e: -e["added_rel_l2"])]


def layer_drift(
    student: fx.GraphModule,
    model: onnx.ModelProto,
    x: torch.Tensor,
    *,
    top: int = 5,
    providers: Sequence[str] = (CPU,),
) -> dict[str, Any]:
    """Per-layer and logit drift of ONNX Runtime (``model``, optimized) from ``student`` on ``x``.

    ``student`` is the fake-quant fx GraphModule the INT8 ``model`` was exported from.
    """
    student = student.eval()
    points, missing = layer_points(student, model)
    subs = _sub_sessions(model, points, providers)
    full = _session(model, providers)
    fixed = full.fixed_batch
    stats = [_Stats() for _ in points]
    logits, same, total = _Stats(), 0, 0
    for batch in x.split(fixed or BATCH):
        recorder = _Recorder(student, {p.node for p in points})
        with torch.no_grad():
            ref_logits = recorder.run(batch).numpy()
        xb = batch.numpy()
        for p, session, s in zip(points, subs, stats, strict=True):
            s.add(session.predict(xb, len(xb)), recorder.values[p.node])
        out_logits = full.predict(xb, len(xb))
        logits.add(out_logits, ref_logits)
        same += int((out_logits.argmax(1) == ref_logits.argmax(1)).sum())
        total += len(xb)
    layers, rel = [], {}
    for p, s in zip(points, stats, strict=True):
        m = s.metrics()
        rel[p.module] = m["rel_l2"]
        inherited = max((rel[u] for u in p.upstream), default=0.0)
        layers.append({
            "module": p.module, "op": p.op, "quantized": p.quantized, "tensor": p.tensor,
            **m, "added_rel_l2": m["rel_l2"] - inherited, "upstream": list(p.upstream),
        })  # fmt: skip
    return {
        "samples": total,
        "reference": "PyTorch fake-quant student",
        "runtime": f"onnxruntime {ort.__version__} {full.provider}, optimizations on",
        "method": METHOD,
        "layers": layers,
        "top": _rank(layers)[:top],
        "not_compared": missing,
        "logits": {**logits.metrics(), "top1_agreement": same / total},
        "tensorrt": tensorrt_status(),
    }
