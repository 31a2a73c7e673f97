"""Check an exported Q/DQ ONNX model against what TensorRT needs to build and fuse it in INT8.

TensorRT quantizes explicitly: it reads the QuantizeLinear/DequantizeLinear (Q/DQ) nodes of the
model and fuses them into integer kernels. :func:`lint_tensorrt` lists every place a model breaks
its rules, each as a :class:`Violation` with a stable ``rule`` id:

================================  ===============================================================
rule                              the model breaks it when
================================  ===============================================================
``opset``                         the default ONNX domain's opset is below 13 (per-channel Q/DQ
                                  needs the ``axis`` attribute of opset 13)
``not-quantized``                 it has no Q/DQ node at all (reported once, nothing else checked)
``activation-type``               a Q/DQ on an activation is not int8: uint8 zero point, uint8
                                  ``output_dtype``, or a QuantizeLinear without zero point (uint8
                                  by the ONNX default). TensorRT runs int8 only (uint8 on DLA)
``weight-type``                   a DequantizeLinear of a constant weight is not int8 (e.g. uint8)
``bias-type``                     a DequantizeLinear of an int32 constant (a quantized bias): the
                                  TensorRT parser rejects it ("only activation types allowed as
                                  input to this layer"); biases stay float, TensorRT quantizes them
``zero-point``                    a Q/DQ zero point is not 0 (TensorRT is symmetric only)
``scale``                         a Q/DQ scale is not strictly positive and finite
``activation-per-tensor``         a Q/DQ on an activation has more than one scale
``conv-input-not-quantized``      input 0 of a Conv/ConvTranspose/Gemm/MatMul (or input 1 of a
                                  MatMul/Gemm whose both inputs are activations) does not come
                                  from a DequantizeLinear
``weight-not-quantized``          the weight of such a layer does not come from a DequantizeLinear
``weight-per-channel``            a weight has one scale for several output channels
``weight-axis``                   a per-channel weight scale is on the wrong axis: 0 for Conv,
                                  ConvTranspose and Gemm with transB=1, 1 for Gemm with transB=0,
                                  the last axis for MatMul
``weight-range``                  an int8 weight is -128 (TensorRT's weight range is [-127, 127])
``residual-add-not-quantized``    an Add of two activations, one coming from a Conv (directly or
                                  through BatchNormalization/Relu), is not of the form
                                  ``conv branch + DequantizeLinear``: TensorRT fuses the Add into
                                  the Conv in INT8 only when the other (residual) input is quantized
================================  ===============================================================

Decisions, where TensorRT leaves room:

- A DequantizeLinear still counts as "before" a layer through ops that only move or select values
  and so commute with per-tensor quantization: MaxPool, Flatten, Reshape, Transpose, Squeeze,
  Unsqueeze, Identity (the set edgekd's export also looks through, ``qdq.TRANSPARENT_OPS``). Not
  through AveragePool/GlobalAveragePool, Concat or anything that computes new values.
- "Per tensor" means a scale of one element, 0-D or shape (1,): the TensorRT parser compares
  volumes, and torch exports activation scales as shape (1,).
- ConvTranspose weights are per channel on axis 0 (its input channels), not axis 1: TensorRT's
  deconvolution kernels support only that (NVIDIA/TensorRT#2380, #1694).
- A layer with one output channel may have a single weight scale (per channel = per tensor).
- In a residual Add the Conv branch itself need not be quantized: TensorRT's recommended pattern is
  ``Conv -> Add <- DequantizeLinear``, where the Add becomes the Conv's epilogue. Both inputs
  quantized passes too. An Add where either input is a constant (a bias) is not a residual.
- A Q/DQ pair whose DequantizeLinear shares the QuantizeLinear's scale and zero point is reported
  once, at the QuantizeLinear. Subgraphs (If/Loop bodies) are not checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto, helper, numpy_helper

from edgekd.errors import BadInput, first_line
from edgekd.export.qdq import TRANSPARENT_OPS

MIN_OPSET = 13
_Q, _DQ = "QuantizeLinear", "DequantizeLinear"
_QDQ = (_Q, _DQ)
_LAYERS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
_CONVS = frozenset({"Conv", "ConvTranspose"})
_TO_CONV = frozenset({"BatchNormalization", "Relu", "Identity"})  # between a Conv and its Add
_INT8 = TensorProto.INT8


@dataclass(frozen=True)
class Violation:
    """One broken rule: its stable id, the node (or tensor) at fault, and what to do."""

    rule: str
    node: str
    message: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.node}: {self.message}"


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """Read an ONNX model (with its external data); BadInput with one line if it is not one."""
    path = Path(path)
    if not path.is_file():
        reason = "is a folder" if path.is_dir() else "no such file"
        raise BadInput(f"{path}: {reason}")
    try:
        model = onnx.load(str(path))
    except DecodeError:
        raise BadInput(f"{path}: not an ONNX model (it does not parse as one)") from None
    except OSError as e:  # unreadable file, or external data missing next to it
        reason = e.strerror or first_line(e)
        raise BadInput(f"{path}: cannot read the ONNX model: {reason}") from None
    except Exception as e:  # noqa: BLE001 - onnx raises many types for a broken file
        raise BadInput(f"{path}: not an ONNX model ({first_line(e)})") from None
    if not model.ir_version or not model.HasField("graph") or not model.graph.node:
        raise BadInput(f"{path}: not an ONNX model (no graph in it)")
    return model


def _name(node: onnx.NodeProto) -> str:
    return node.name or (node.output[0] if node.output else node.op_type)


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    return next((a.i for a in node.attribute if a.name == name), default)


class _Index:
    """Constants, producers and element types of a graph's tensors."""

    def __init__(self, model: onnx.ModelProto):
        graph = model.graph
        self.consts = {t.name: t for t in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and node.output:
                value = next((a.t for a in node.attribute if a.name == "value"), None)
                if value is not None:
                    self.consts[node.output[0]] = value
        self.producer = {o: n for n in graph.node for o in n.output if o}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.types: dict[str, int] = {}
        try:
            inferred = onnx.shape_inference.infer_shapes(model).graph
        except Exception:  # noqa: BLE001 - types are a help here; the checks work without them
            inferred = graph
        for vi in [*inferred.value_info, *inferred.input, *inferred.output]:
            if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
                self.types[vi.name] = vi.type.tensor_type.elem_type
        self._const_memo: dict[str, bool] = {}

    def array(self, name: str) -> np.ndarray | None:
        """The value of a constant tensor (an initializer or Constant, through Identity)."""
        node = self.producer.get(name)
        while name not in self.consts and node is not None and node.op_type == "Identity":
            name = node.input[0]
            node = self.producer.get(name)
        t = self.consts.get(name)
        return None if t is None else numpy_helper.to_array(t)

    def elem_type(self, name: str) -> int | None:
        t = self.consts.get(name)
        if t is not None:
            return t.data_type
        value = self.array(name)
        return (
            self.types.get(name) if value is None else helper.np_dtype_to_tensor_dtype(value.dtype)
        )

    def is_const(self, name: str) -> bool:
        """Whether ``name`` is an initializer, a Constant, or computed from constants only."""
        if name in self.consts:
            return True
        if name not in self._const_memo:
            self._const_memo[name] = False  # cycles (invalid graphs) end here
            node = self.producer.get(name)
            inputs = [i for i in node.input if i] if node is not None else []
            self._const_memo[name] = bool(inputs) and all(self.is_const(i) for i in inputs)
        return self._const_memo[name]

    def source(self, name: str, through: frozenset[str]) -> onnx.NodeProto | None:
        """The first producer of ``name`` that is not in ``through`` (following input 0)."""
        node = self.producer.get(name)
        seen = 0
        while node is not None and node.op_type in through and node.input and seen < 10_000:
            node = self.producer.get(node.input[0])
            seen += 1
        return node

    def from_dq(self, name: str) -> onnx.NodeProto | None:
        node = self.source(name, TRANSPARENT_OPS)
        return node if node is not None and node.op_type == _DQ else None


def _type_name(elem_type: int | None) -> str:
    return "unknown" if elem_type is None else helper.tensor_dtype_to_np_dtype(elem_type).name


def _quantized_type(ix: _Index, node: onnx.NodeProto) -> int | None:
    """The integer type a Q produces or a DQ consumes, by the ONNX rules."""
    zp = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if node.op_type == _DQ:
        return ix.elem_type(node.input[0]) or (ix.elem_type(zp) if zp else None)
    if zp:
        return ix.elem_type(zp)
    return _attr(node, "output_dtype", 0) or TensorProto.UINT8


def _same_params(a: onnx.NodeProto, b: onnx.NodeProto) -> bool:
    return list(a.input[1:]) == list(b.input[1:]) and _attr(a, "axis", 1) == _attr(b, "axis", 1)


def _check_qdq(ix: _Index, node: onnx.NodeProto) -> list[Violation]:
    """Type, zero point, scale and granularity of one Q or DQ node."""
    name, out = _name(node), []
    weight = ix.is_const(node.input[0])
    qtype = _quantized_type(ix, node)
    if qtype is not None and qtype != _INT8:
        if not weight:
            out.append(
                Violation(
                    "activation-type",
                    name,
                    f"quantizes an activation to {_type_name(qtype)}: TensorRT needs int8 with "
                    "zero point 0 (export with the tensorrt quantization scheme)",
                )
            )
        elif qtype == TensorProto.INT32:
            out.append(
                Violation(
                    "bias-type",
                    name,
                    "dequantizes an int32 constant (a quantized bias): TensorRT rejects "
                    "DequantizeLinear of int32; keep the bias float, TensorRT quantizes it itself",
                )
            )
        else:
            out.append(
                Violation(
                    "weight-type",
                    name,
                    f"dequantizes a {_type_name(qtype)} weight: TensorRT needs int8 weights "
                    "with zero point 0",
                )
            )
    zp_name = node.input[2] if len(node.input) > 2 else ""
    if zp_name:
        zp = ix.array(zp_name)
        if zp is None:
            if not ix.is_const(zp_name):
                out.append(
                    Violation(
                        "zero-point",
                        name,
                        f"zero point {zp_name!r} is computed at run time: TensorRT needs a "
                        "constant 0",
                    )
                )
        elif np.any(zp != 0):
            bad = zp[zp != 0]
            out.append(
                Violation(
                    "zero-point",
                    name,
                    f"zero point {bad.flat[0]} ({bad.size} of {zp.size} non-zero): TensorRT "
                    "quantizes symmetrically, every zero point must be 0",
                )
            )
    scale = ix.array(node.input[1])
    if scale is not None:
        values = scale.astype(np.float64)
        if not np.all(np.isfinite(values) & (values > 0)):
            out.append(
                Violation(
                    "scale",
                    name,
                    "has a scale that is zero, negative or not finite: TensorRT needs every "
                    "scale > 0 (recalibrate; a channel that is all zeros still needs a tiny scale)",
                )
            )
        if not weight and scale.size > 1:
            out.append(
                Violation(
                    "activation-per-tensor",
                    name,
                    f"quantizes an activation with {scale.size} scales: TensorRT quantizes "
                    "activations per tensor, use one scale",
                )
            )
    return out


def _channel_axis(node: onnx.NodeProto, rank: int) -> int:
    """The weight axis TensorRT wants the per-channel scales on, for the layer ``node``."""
    if node.op_type == "Gemm":
        return 0 if _attr(node, "transB", 0) else 1
    if node.op_type == "MatMul":
        return rank - 1
    return 0  # Conv: output channels; ConvTranspose: input channels, all TensorRT supports


def _weight_dq(ix: _Index, name: str, axis: int) -> tuple[onnx.NodeProto | None, int]:
    """The DequantizeLinear behind a weight, through Identity/Transpose; ``axis`` mapped to it."""
    node = ix.producer.get(name)
    while node is not None and node.op_type in ("Identity", "Transpose"):
        if node.op_type == "Transpose":
            perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
            shape = ix.array(node.input[0])
            rank = len(perm) if perm else (shape.ndim if shape is not None else 2)
            axis = perm[axis] if perm else rank - 1 - axis
        node = ix.producer.get(node.input[0])
    return (node if node is not None and node.op_type == _DQ else None), axis


def _int8_weight(ix: _Index, dq: onnx.NodeProto) -> np.ndarray | None:
    """The integer values a weight DequantizeLinear reads (computing a Q of a float constant)."""
    values = ix.array(dq.input[0])
    if values is not None:
        return values
    q = ix.producer.get(dq.input[0])
    if q is None or q.op_type != _Q:
        return None
    w, scale = ix.array(q.input[0]), ix.array(q.input[1])
    if w is None or scale is None or not np.all(scale > 0):
        return None
    zp = ix.array(q.input[2]) if len(q.input) > 2 and q.input[2] else np.zeros_like(scale)
    shape = [1] * w.ndim
    if scale.size > 1:
        shape[_attr(q, "axis", 1) % max(w.ndim, 1)] = -1
    q_values = np.round(w / scale.reshape(shape)) + zp.astype(np.int64).reshape(shape)
    return np.clip(q_values, -128, 127).astype(np.int8)


def _check_weight(ix: _Index, node: onnx.NodeProto) -> list[Violation]:
    name, weight = _name(node), node.input[1]
    w_shape = _shape_of(ix, weight)
    rank = len(w_shape) if w_shape is not None else 2
    want = _channel_axis(node, rank)
    dq, dq_axis = _weight_dq(ix, weight, want)
    if dq is None:
        return [
            Violation(
                "weight-not-quantized",
                name,
                f"weight {weight!r} does not come from a DequantizeLinear: store it as int8 "
                "behind a DequantizeLinear (per channel, zero point 0)",
            )
        ]
    out: list[Violation] = []
    values = _int8_weight(ix, dq)
    scale = ix.array(dq.input[1])
    if values is not None and scale is not None and values.ndim > dq_axis:
        channels = values.shape[dq_axis]
        axis = _attr(dq, "axis", 1) % max(values.ndim, 1)
        if scale.size == 1 and channels > 1:
            out.append(
                Violation(
                    "weight-per-channel",
                    _name(dq),
                    f"one scale for the {channels} output channels of {name}: use one scale per "
                    f"channel on axis {dq_axis}",
                )
            )
        elif scale.size > 1 and axis != dq_axis:
            out.append(
                Violation(
                    "weight-axis",
                    _name(dq),
                    f"per-channel scales on axis {axis}, but {name} ({node.op_type}) needs them "
                    f"on axis {dq_axis} of this weight",
                )
            )
    if values is not None and values.dtype == np.int8 and np.any(values < -127):
        count = int(np.sum(values < -127))
        out.append(
            Violation(
                "weight-range",
                _name(dq),
                f"{count} weight value(s) of {name} are -128: TensorRT's int8 weights are in "
                "[-127, 127] (quantize weights with qmin -127)",
            )
        )
    return out


def _shape_of(ix: _Index, name: str) -> tuple[int, ...] | None:
    """The shape of a constant weight, following Identity/Transpose/DequantizeLinear/Q."""
    node, perms = ix.producer.get(name), []
    array = ix.array(name)
    while array is None and node is not None and node.op_type in ("Identity", "Transpose", *_QDQ):
        if node.op_type == "Transpose":
            perms.append(next((list(a.ints) for a in node.attribute if a.name == "perm"), None))
        array = ix.array(node.input[0])
        node = ix.producer.get(node.input[0])
    if array is None:
        return None
    shape = list(array.shape)
    for perm in reversed(perms):
        shape = [shape[p] for p in perm] if perm else shape[::-1]
    return tuple(shape)


def _check_layer(ix: _Index, node: onnx.NodeProto) -> list[Violation]:
    name, out = _name(node), []
    activations = [0]
    if len(node.input) > 1 and not ix.is_const(node.input[1]):
        activations.append(1)  # activation x activation MatMul/Gemm: both inputs are activations
    for i in activations:
        if not ix.is_const(node.input[i]) and ix.from_dq(node.input[i]) is None:
            out.append(
                Violation(
                    "conv-input-not-quantized",
                    name,
                    f"input {i} ({node.input[i]!r}) of this {node.op_type} does not come from a "
                    "DequantizeLinear: put a Q/DQ pair (int8, per tensor) in front of it",
                )
            )
    if len(activations) == 1 and len(node.input) > 1:
        out += _check_weight(ix, node)
    return out


def _check_add(ix: _Index, node: onnx.NodeProto) -> list[Violation]:
    inputs = list(node.input)
    if len(inputs) != 2 or any(ix.is_const(i) for i in inputs):
        return []
    from_conv = []
    for i in inputs:
        src = ix.source(i, _TO_CONV)
        from_conv.append(src is not None and src.op_type in _CONVS)
    if not any(from_conv):
        return []
    quantized = [ix.from_dq(i) is not None for i in inputs]
    if all(quantized) or (quantized[0] and from_conv[1]) or (quantized[1] and from_conv[0]):
        return []
    residual = [i for i, q, c in zip(inputs, quantized, from_conv, strict=True) if not q and not c]
    branch = residual[0] if residual else inputs[1] if from_conv[0] else inputs[0]
    return [
        Violation(
            "residual-add-not-quantized",
            _name(node),
            f"the residual input {branch!r} of this Add has no Q/DQ pair: quantize it (int8, "
            "per tensor) so TensorRT fuses Conv+Add in INT8",
        )
    ]


def _check_opset(model: onnx.ModelProto) -> list[Violation]:
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if not versions:
        return [Violation("opset", "model", "no opset for the default ONNX domain: export again")]
    if max(versions) < MIN_OPSET:
        return [
            Violation(
                "opset",
                "model",
                f"opset {max(versions)}: TensorRT's per-channel Q/DQ needs opset >= {MIN_OPSET} "
                "(export with opset_version=13 or newer)",
            )
        ]
    return []


def lint_tensorrt(model: onnx.ModelProto) -> list[Violation]:
    """Every violation of TensorRT's explicit-quantization rules in ``model``, in graph order."""
    out = _check_opset(model)
    nodes = list(model.graph.node)
    if not any(n.op_type in _QDQ for n in nodes):
        return out + [
            Violation(
                "not-quantized",
                model.graph.name or "model",
                "no QuantizeLinear/DequantizeLinear node: this is a float model; export the "
                "quantization-aware student with the tensorrt scheme for an INT8 TensorRT engine",
            )
        ]
    ix = _Index(model)
    for node in nodes:
        if node.op_type == _DQ:
            q = ix.producer.get(node.input[0])
            if q is not None and q.op_type == _Q and _same_params(q, node):
                continue  # a Q/DQ pair: reported at its QuantizeLinear
        if node.op_type in _QDQ and len(node.input) >= 2:
            out += _check_qdq(ix, node)
        elif node.op_type in _LAYERS and node.input:
            out += _check_layer(ix, node)
        elif node.op_type == "Add":
            out += _check_add(ix, node)
    return out


def qdq_counts(model: onnx.ModelProto) -> tuple[int, int]:
    """(Q/DQ pairs, Conv/ConvTranspose/Gemm/MatMul layers whose input 0 comes from a DQ)."""
    ix = _Index(model)
    pairs = sum(
        1
        for n in model.graph.node
        if n.op_type == _Q and any(c.op_type == _DQ for c in ix.consumers.get(n.output[0], []))
    )
    layers = sum(
        1
        for n in model.graph.node
        if n.op_type in _LAYERS and n.input and ix.from_dq(n.input[0]) is not None
    )
    return pairs, layers
