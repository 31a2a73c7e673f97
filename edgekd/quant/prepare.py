"""Turn a float model into a fake-quant model for a scheme: fold BN, place quantizers, calibrate."""

from __future__ import annotations

import copy
import operator
from collections.abc import Collection, Iterable

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.experimental.optimization import fuse
from torch.nn.utils import parametrize

from edgekd.errors import BadInput
from edgekd.quant.fakequant import ActFakeQuant, WeightFakeQuant
from edgekd.quant.scheme import QuantScheme

_QUANTIZABLE = (nn.Conv2d, nn.Linear)
# Ops that keep the values (and so the quantization grid) of their input: a tensor quantized before
# them needs no second quantizer after them (ONNX Runtime moves the Q/DQ pair across them).
_TRANSPARENT_MODULES = (nn.MaxPool2d, nn.Flatten, nn.Dropout, nn.Identity)
_TRANSPARENT_CALLS = {torch.flatten, F.max_pool2d, F.dropout, "flatten", "view", "reshape"}
_RELU_CALLS = {F.relu, torch.relu, "relu"}
# Ops that make new values: with ``quantize_every_op`` their outputs are quantized too.
_OTHER_MODULES = (
    nn.AdaptiveAvgPool2d, nn.AvgPool2d, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.SiLU,
    nn.GELU, nn.ReLU6, nn.Softmax,
)  # fmt: skip
_OTHER_CALLS = {
    operator.add, operator.mul, torch.add, torch.mul, torch.cat, torch.mean,
    F.adaptive_avg_pool2d, F.avg_pool2d, F.hardswish, F.silu, F.gelu, torch.sigmoid,
    "add", "mul", "mean", "sigmoid",
}  # fmt: skip


def _module(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    return gm.get_submodule(node.target) if node.op == "call_module" else None


def _is_transparent(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(_module(gm, node), _TRANSPARENT_MODULES)
    return node.op in ("call_function", "call_method") and node.target in _TRANSPARENT_CALLS


def _is_other_op(gm: fx.GraphModule, node: fx.Node) -> bool:
    """An op other than Conv/Gemm that computes new values (pooling, activations, arithmetic)."""
    if node.op == "call_module":
        return isinstance(_module(gm, node), _OTHER_MODULES)
    return node.op in ("call_function", "call_method") and node.target in _OTHER_CALLS


def _is_relu(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(_module(gm, node), nn.ReLU)
    return node.op in ("call_function", "call_method") and node.target in _RELU_CALLS


def trace(model: nn.Module) -> fx.GraphModule:
    """Symbolically trace ``model`` with BatchNorm folded into the preceding convolutions."""
    try:
        gm = fx.symbolic_trace(copy.deepcopy(model).eval())
    except Exception as e:  # noqa: BLE001 - tracing raises many types; all mean the same here
        raise BadInput(
            f"the student cannot be traced by torch.fx ({type(e).__name__}: {e}); "
            "quantization needs a model without data-dependent control flow"
        ) from None
    gm = fuse(gm)
    for m in gm.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    for p in gm.parameters():
        p.requires_grad_(True)  # fuse_conv_bn_eval leaves the folded bias frozen
    return gm


def quantizable_layers(model: nn.Module) -> list[str]:
    """Names of the layers a scheme quantizes (Conv2d, Linear), in execution order."""
    gm = trace(model)
    return [n.target for n in gm.graph.nodes if isinstance(_module(gm, n), _QUANTIZABLE)]


def unquantizable_layers(model: nn.Module) -> list[str]:
    """Layers with weights that no scheme here quantizes ("name (Type)"): they stay in float."""
    return [
        f"{name} ({type(m).__name__})"
        for name, m in model.named_modules()
        if not isinstance(m, _QUANTIZABLE)
        and not list(m.children())
        and any(p.dim() >= 2 for p in m.parameters(recurse=False))
    ]


def prepare_qat(
    model: nn.Module,
    scheme: QuantScheme,
    calibrator: str | None = None,
    *,
    keep_float: Collection[str] = (),
) -> fx.GraphModule:
    """A copy of ``model`` with BN folded and fake-quant placed as ``scheme`` prescribes.

    Layers named in ``keep_float`` get no quantizers. Activation quantizers start in observing
    mode: run :func:`calibrate` before training.
    """
    gm = trace(model)
    layers = {n.target for n in gm.graph.nodes if isinstance(_module(gm, n), _QUANTIZABLE)}
    unknown = sorted(set(keep_float) - layers)
    if unknown:
        raise BadInput(
            f"keep-float layer(s) {', '.join(unknown)} are not quantizable layers of the student "
            f"({', '.join(sorted(layers))})"
        )
    graph = gm.graph
    qmin, qmax = scheme.act_range
    quantized: dict[fx.Node, fx.Node] = {}  # tensor -> its fake-quant node
    count = 0

    def new_quant(src: fx.Node, before: fx.Node | None) -> fx.Node:
        nonlocal count
        name = f"act_quant_{count}"
        count += 1
        gm.add_submodule(name, ActFakeQuant(qmin, qmax, calibrator or scheme.calibrator))
        ctx = graph.inserting_before(before) if before else graph.inserting_after(src)
        with ctx:
            q = graph.call_module(name, (src,))
        quantized[src] = q
        quantized[q] = q
        return q

    def already_quantized(node: fx.Node) -> bool:
        while node not in quantized and _is_transparent(gm, node):
            node = node.args[0]
        return node in quantized

    if scheme.quantize_every_op:  # first, so that the layers' inputs see these quantizers
        for node in list(graph.nodes):
            if _is_other_op(gm, node) and not all(u.op == "output" for u in node.users):
                users = list(node.users)
                q = new_quant(node, before=None)
                for u in users:
                    u.replace_input_with(node, q)
    for node in list(graph.nodes):
        mod = _module(gm, node)
        if not isinstance(mod, _QUANTIZABLE) or node.target in keep_float:
            continue
        parametrize.register_parametrization(
            mod, "weight", WeightFakeQuant(mod.weight.shape[0], scheme.weight_qmax)
        )
        src = node.args[0]
        if src in quantized:
            node.replace_input_with(src, quantized[src])
        elif not (scheme.quantize_outputs and already_quantized(src)):
            node.replace_input_with(src, new_quant(src, before=node))
        if scheme.quantize_outputs:
            out = node
            if len(node.users) == 1 and _is_relu(gm, next(iter(node.users))):
                out = next(iter(node.users))
            if not all(u.op == "output" for u in out.users):
                users = list(out.users)
                q = new_quant(out, before=None)
                for u in users:
                    u.replace_input_with(out, q)
    if count == 0 and not keep_float:
        raise BadInput("the student has no Conv2d or Linear layer to quantize")
    graph.lint()
    gm.recompile()
    return gm


def act_quantizers(model: nn.Module) -> list[ActFakeQuant]:
    return [m for m in model.modules() if isinstance(m, ActFakeQuant)]


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Observe activation ranges on ``batches`` and fix every activation quantizer's scale."""
    quants = act_quantizers(model)
    for q in quants:
        q.observing = True
    was_training = model.training
    model.eval()
    for x in batches:
        model(x)
    for q in quants:
        q.finalize()
    model.train(was_training)


def freeze(model: nn.Module) -> None:
    """Fix every weight scale at its current value, as export needs constants."""
    for m in model.modules():
        if parametrize.is_parametrized(m, "weight"):
            for p in m.parametrizations.weight:
                if isinstance(p, WeightFakeQuant):
                    p.frozen = False
                    _ = m.weight  # recompute the scale from the current weights
                    p.freeze()
