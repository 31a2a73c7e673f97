"""What runs in INT8 once the runtime has optimized the graph: the share of multiply-accumulates in
integer kernels, layer by layer.

A Q/DQ model says which layers *may* run in integer arithmetic; the runtime decides which do. ONNX
Runtime fuses DequantizeLinear → Conv → QuantizeLinear into QLinearConv only where its selectors
accept the pattern, and re-lays float convolutions out (NCHWc, FusedConv); TensorRT picks each
layer's precision among its tactics. MACs are counted per layer in the exported graph
(:mod:`edgekd.roofline`), then each layer is found in the optimized graph (ONNX Runtime) or the
engine's layer information (TensorRT) and its kernel read.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort

from edgekd.device.ort import session_options
from edgekd.errors import BadInput, first_line
from edgekd.export.tensorrt import _is_compute, _layer_precision
from edgekd.roofline import batch1_shapes, is_compute, node_macs

# ONNX Runtime's integer multiply-accumulate kernels (ai.onnx and com.microsoft)
INTEGER_KERNELS = frozenset(
    {
        "QLinearConv", "QLinearMatMul", "QGemm", "ConvInteger", "MatMulInteger",
        "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QAttention", "QLinearConvTranspose",
    }
)  # fmt: skip
# ... and its float ones, after fusion and layout changes (com.microsoft, com.microsoft.nchwc)
FLOAT_KERNELS = frozenset(
    {"Conv", "FusedConv", "NhwcFusedConv", "ConvTranspose", "Gemm", "FusedGemm", "MatMul",
     "FusedMatMul"}
)  # fmt: skip
# ops a fused kernel absorbs after a convolution: their outputs name the fused node
_FOLLOWERS = frozenset(
    {"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Mul", "Add",
     "BatchNormalization", "QuantizeLinear", "DequantizeLinear", "Tanh"}
)  # fmt: skip
_SUFFIX = re.compile(r"(_token_\d+|_nchwc)$")


def optimized_graph(
    path: str | Path, threads: int = 1, providers: Sequence[str] = ("CPUExecutionProvider",)
) -> onnx.ModelProto:
    """The graph ONNX Runtime runs for ``path``, optimized with edgekd's deployment options."""
    with tempfile.TemporaryDirectory() as tmp:
        opts = session_options(threads)
        opts.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        try:
            ort.InferenceSession(str(path), opts, providers=list(providers))
        except Exception as e:  # noqa: BLE001 - ORT raises several types for an unreadable model
            raise BadInput(f"{path}: ONNX Runtime cannot load it: {first_line(e)}") from None
        return onnx.load(opts.optimized_model_filepath)


def _stem(name: str) -> str:
    """A node or tensor name without the suffixes ONNX Runtime's transformers append."""
    while (trimmed := _SUFFIX.sub("", name)) != name:
        name = trimmed
    return name


def _groups(model: onnx.ModelProto) -> dict[str, set[str]]:
    """Per compute node (by name): its name and the tensors a kernel fused from it may produce
    (its output, then the outputs of the single-consumer followers after it)."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    groups = {}
    for node in model.graph.node:
        if not is_compute(node):
            continue
        keys, tensor = {node.name, _stem(node.name)}, node.output[0]
        for _ in range(6):
            keys |= {tensor, _stem(tensor)}
            users = consumers.get(tensor, [])
            if len(users) != 1 or users[0].op_type not in _FOLLOWERS or is_compute(users[0]):
                break
            tensor = users[0].output[0]
        groups[node.name] = keys
    return groups


def _kernel_nodes(optimized: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [
        n for n in optimized.graph.node if n.op_type in INTEGER_KERNELS | FLOAT_KERNELS
    ]  # fmt: skip


def match_kernels(
    model: onnx.ModelProto, optimized: onnx.ModelProto
) -> dict[str, onnx.NodeProto | None]:
    """Each compute node of ``model`` (by name) → the kernel node of ``optimized`` that computes
    it (None: not found, e.g. constant-folded away). Matched by name first, then by the tensors
    a fusion names its node after; what is left, in graph order when the counts agree."""
    groups = _groups(model)
    kernels = _kernel_nodes(optimized)
    found: dict[str, onnx.NodeProto | None] = dict.fromkeys(groups)
    free = list(kernels)

    def claim(layer: str, kernel: onnx.NodeProto) -> None:
        found[layer] = kernel
        free.remove(kernel)

    for layer in groups:  # the same name: QDQ fusions keep the Conv's
        kernel = next((k for k in free if _stem(k.name) == _stem(layer)), None)
        if kernel is not None:
            claim(layer, kernel)
    for layer, keys in groups.items():
        if found[layer] is None:
            kernel = next((k for k in free if _stem(k.name) in keys or {*k.output} & keys), None)
            if kernel is not None:
                claim(layer, kernel)
    left = [layer for layer, kernel in found.items() if kernel is None]
    if left and len(left) == len(free):
        for layer, kernel in zip(left, list(free), strict=True):
            claim(layer, kernel)
    return found


def kernel_label(node: onnx.NodeProto) -> str:
    return f"{node.domain}.{node.op_type}" if node.domain else node.op_type


def layer_kernels(
    model: onnx.ModelProto, optimized: onnx.ModelProto, modules: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """One row per compute layer of ``model``: its ONNX node, the module it comes from (where
    ``modules`` lists them in execution order, one per layer), the op it was exported as, the
    kernel it became in ``optimized``, its MACs at batch 1 (None: unknown shapes), and whether it
    runs in integer arithmetic."""
    shapes = batch1_shapes(model)
    compute = [n for n in model.graph.node if is_compute(n)]
    names = list(modules) if len(modules) == len(compute) else [None] * len(compute)
    found = match_kernels(model, optimized)
    rows = []
    for node, module in zip(compute, names, strict=True):
        kernel = found[node.name]
        rows.append(
            {
                "layer": node.name,
                "module": module,
                "op": node.op_type,
                "kernel": kernel_label(kernel) if kernel is not None else None,
                "macs": node_macs(node, shapes),
                "int8": kernel is not None and kernel.op_type in INTEGER_KERNELS,
            }
        )
    return rows


def summarize(rows: list[dict[str, Any]], runtime: str, how: str) -> dict[str, Any]:
    """The MAC-weighted INT8 share of ``rows`` (None, with the reason, where a layer's MACs or
    kernel are unknown)."""
    total = sum(r["macs"] or 0 for r in rows)
    int8 = sum(r["macs"] or 0 for r in rows if r["int8"])
    unknown = [r["layer"] for r in rows if r["macs"] is None or r["kernel"] is None]
    out: dict[str, Any] = {
        "runtime": runtime,
        "how": how,
        "layers": len(rows),
        "int8_layers": sum(r["int8"] for r in rows),
        "macs": total,
        "int8_macs": int8,
        "int8_fraction": int8 / total if total and not unknown else None,
        "per_layer": rows,
    }
    if unknown:
        out["unavailable"] = (
            f"{len(unknown)} layer(s) with unknown MACs or kernel, first {unknown[0]}"
        )
    return out


def ort_coverage(
    path: str | Path,
    threads: int = 1,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    modules: Sequence[str] = (),
) -> dict[str, Any]:
    """The INT8 coverage of the ONNX model at ``path`` on ONNX Runtime, after its graph
    optimizations with edgekd's deployment options."""
    model = onnx.load(str(path))
    optimized = optimized_graph(path, threads, providers)
    rows = layer_kernels(model, optimized, modules)
    provider = providers[0] if providers else "CPUExecutionProvider"
    return summarize(
        rows,
        f"onnxruntime {ort.__version__} {provider}",
        "the graph ONNX Runtime runs after its optimizations (ORT_ENABLE_ALL, as deployed)",
    )


def tensorrt_coverage(
    layer_info: dict[str, Any],
    model: onnx.ModelProto,
    runtime: str = "TensorRT",
    modules: Sequence[str] = (),
) -> dict[str, Any]:
    """The INT8 coverage of a TensorRT engine built from ``model``, from its engine inspector
    layer information: each ONNX compute node is found in the engine layer whose name lists it
    ("/conv/Conv + /act/Relu"), and takes that layer's precision."""
    layers = layer_info.get("Layers") if isinstance(layer_info, dict) else None
    if not isinstance(layers, list):
        raise BadInput('engine layer information has no "Layers" list')
    shapes = batch1_shapes(model)
    compute = [n for n in model.graph.node if is_compute(n)]
    names = list(modules) if len(modules) == len(compute) else [None] * len(compute)
    by_node: dict[str, dict[str, Any]] = {}
    for layer in layers:
        if isinstance(layer, dict) and _is_compute(layer):
            for part in str(layer.get("Name", "")).split(" + "):
                by_node.setdefault(part.strip(), layer)
    rows = []
    for node, module in zip(compute, names, strict=True):
        layer = by_node.get(node.name)
        precision = _layer_precision(layer) if layer is not None else None
        rows.append(
            {
                "layer": node.name,
                "module": module,
                "op": node.op_type,
                "kernel": f"{layer.get('LayerType', '')} ({precision})" if layer else None,
                "macs": node_macs(node, shapes),
                "int8": precision == "int8",
            }
        )
    return summarize(
        rows, runtime, "the engine inspector's layer information (precision per layer)"
    )
