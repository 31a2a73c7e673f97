"""Turn a float model into a fake-quant model for a scheme: fold BN, place quantizers, calibrate."""

from __future__ import annotations

import copy
import inspect
import operator
from collections import Counter
from collections.abc import Collection, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.experimental.optimization import fuse
from torch.nn.utils import parametrize
from torch.nn.utils.fusion import fuse_conv_bn_weights

from edgekd.errors import BadInput
from edgekd.quant.fakequant import ActFakeQuant, BiasFakeQuant, WeightFakeQuant
from edgekd.quant.scheme import QuantScheme

_QUANTIZABLE = (nn.Conv2d, nn.Linear)
# Ops that keep the values (and so the quantization grid) of their input: a tensor quantized before
# them needs no second quantizer after them (ONNX Runtime moves the Q/DQ pair across them).
_TRANSPARENT_MODULES = (nn.MaxPool2d, nn.Flatten, nn.Dropout, nn.Identity)
_TRANSPARENT_CALLS = {torch.flatten, F.max_pool2d, F.dropout, "flatten", "view", "reshape"}
# Activations a runtime applies inside the integer Conv/Gemm kernel: a quantizer after them
# covers the layer's output (ONNX Runtime drops a Relu, or a Clip(0, 6), in front of a
# QuantizeLinear whose range it contains, then fuses DQ -> Conv -> Q into QLinearConv).
_FUSED_ACT_MODULES = (nn.ReLU, nn.ReLU6)
_FUSED_ACT_CALLS = {F.relu, torch.relu, F.relu6, "relu"}
_ADD_CALLS = {operator.add, operator.iadd, torch.add, "add"}
# Modules that only run in training (or nothing): a conv "feeds" an Add through them.
_PASS_MODULES = (nn.Identity, nn.Dropout)
_ARITHMETIC = (operator.add, operator.sub, operator.mul, operator.floordiv, operator.truediv)
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


def _is_shape_value(node: object) -> bool:
    """Whether ``node`` computes a Python number from tensor shapes (``x.size(1) * 2``), not a
    tensor: arithmetic on it has nothing to quantize."""
    if not isinstance(node, fx.Node):
        return not isinstance(node, (list, tuple))  # a constant
    if node.op == "call_method" and node.target in ("size", "dim", "numel"):
        return True
    if node.op == "call_function" and node.target is getattr:
        return node.args[1] == "shape"
    if node.op == "call_function" and node.target in (operator.getitem, *_ARITHMETIC):
        return all(_is_shape_value(a) for a in node.args)
    return False


def _is_other_op(gm: fx.GraphModule, node: fx.Node) -> bool:
    """An op other than Conv/Gemm that computes new values (pooling, activations, arithmetic on
    tensors)."""
    if node.op == "call_module":
        return isinstance(_module(gm, node), _OTHER_MODULES)
    if node.op not in ("call_function", "call_method") or node.target not in _OTHER_CALLS:
        return False
    return not _is_shape_value(node)


def is_fused_activation(gm: fx.GraphModule, node: fx.Node) -> bool:
    """ReLU or ReLU6: runtimes apply it inside the Conv/Gemm kernel before it."""
    if node.op == "call_module":
        return isinstance(_module(gm, node), _FUSED_ACT_MODULES)
    return node.op in ("call_function", "call_method") and node.target in _FUSED_ACT_CALLS


def _is_add(node: fx.Node) -> bool:
    return node.op in ("call_function", "call_method") and node.target in _ADD_CALLS


def _drop_no_ops(gm: fx.GraphModule) -> None:
    """Remove traced shape assertions (timm's BatchNormAct2d checks ``x.ndim == 4``) and
    nn.Identity calls (its ``drop`` between the norm and the activation): the assertions only
    re-check what tracing saw, and both would hide the conv -> BatchNorm -> activation chains
    that folding and quantizer placement look for."""
    for node in list(gm.graph.nodes):
        if node.op == "call_function" and node.target is torch._assert:
            gm.graph.erase_node(node)
        elif isinstance(_module(gm, node), nn.Identity):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
    gm.graph.eliminate_dead_code()


def _attr(gm: fx.GraphModule, node: Any) -> torch.Tensor | None:
    if node is None:
        return None
    if not isinstance(node, fx.Node) or node.op != "get_attr":
        raise TypeError("not a get_attr node")
    return operator.attrgetter(node.target)(gm)


def _fold_functional_batch_norms(gm: fx.GraphModule) -> None:
    """Fold ``F.batch_norm`` calls (timm's BatchNormAct2d traces into one) into the Conv2d before
    them, as ``fuse`` does for BatchNorm2d modules."""
    signature = inspect.signature(F.batch_norm)
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target is not F.batch_norm:
            continue
        args = signature.bind(*node.args, **node.kwargs)
        args.apply_defaults()
        a = args.arguments
        src = a["input"]
        conv = _module(gm, src) if isinstance(src, fx.Node) else None
        if not isinstance(conv, nn.Conv2d) or len(src.users) != 1 or a["training"] is not False:
            continue
        try:
            mean, var, weight, bias = (_attr(gm, a[k]) for k in ("running_mean", "running_var",
                                                                  "weight", "bias"))  # fmt: skip
        except TypeError:
            continue
        if mean is None or var is None:
            continue
        conv.weight, conv.bias = fuse_conv_bn_weights(
            conv.weight, conv.bias, mean, var, a["eps"], weight, bias
        )
        node.replace_all_uses_with(src)
        gm.graph.erase_node(node)
    gm.graph.eliminate_dead_code()
    gm.recompile()


def _no_inplace(gm: fx.GraphModule) -> None:
    """Every activation out of place: an in-place op would overwrite the tensor a fake-quant
    observer, or ``edgekd diff``, reads."""
    for m in gm.modules():
        if isinstance(getattr(m, "inplace", None), bool):
            m.inplace = False
    for node in gm.graph.nodes:
        if node.kwargs.get("inplace") is True:
            node.kwargs = {**node.kwargs, "inplace": False}
    gm.recompile()


class _Tracer(fx.Tracer):
    """fx's tracer, with subclasses of Conv2d and Linear (timm's ``Linear``, ``Conv2dSame``) kept
    as modules, so that they are quantized like the torch ones."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, _QUANTIZABLE) or super().is_leaf_module(m, qualname)


def trace(model: nn.Module) -> fx.GraphModule:
    """Symbolically trace ``model`` with every BatchNorm that follows a convolution folded into it
    (BatchNorm2d modules and the ``F.batch_norm`` of timm's BatchNormAct2d) and every activation
    out of place."""
    try:
        root = copy.deepcopy(model).eval()
        gm = fx.GraphModule(root, _Tracer().trace(root), type(root).__name__)
    except Exception as e:  # noqa: BLE001 - tracing raises many types; all mean the same here
        raise BadInput(
            f"the student cannot be traced by torch.fx ({type(e).__name__}: {e}); "
            "quantization needs a model without data-dependent control flow"
        ) from None
    _drop_no_ops(gm)
    _fold_functional_batch_norms(gm)
    gm = fuse(
        gm, no_trace=True
    )  # BatchNorm2d modules; also drops the modules no node uses any more
    _no_inplace(gm)
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

    def new_quant(src: fx.Node) -> fx.Node:
        """A quantizer of ``src``, right after it (so that it can feed every user of ``src``)."""
        nonlocal count
        name = f"act_quant_{count}"
        count += 1
        gm.add_submodule(name, ActFakeQuant(qmin, qmax, calibrator or scheme.calibrator))
        with graph.inserting_after(src):
            q = graph.call_module(name, (src,))
        quantized[src] = q
        quantized[q] = q
        return q

    def quantize_for(src: fx.Node, user: fx.Node) -> None:
        """``user`` reads ``src`` through its quantizer (made if ``src`` has none yet)."""
        user.replace_input_with(src, quantized.get(src) or new_quant(src))

    def already_quantized(node: fx.Node) -> bool:
        while node not in quantized and _is_transparent(gm, node):
            node = node.args[0]
        return node in quantized

    if scheme.quantize_every_op:  # first, so that the layers' inputs see these quantizers
        for node in list(graph.nodes):
            if _is_other_op(gm, node) and not all(u.op == "output" for u in node.users):
                users = list(node.users)
                q = new_quant(node)
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
        if src in quantized or not (scheme.quantize_outputs and already_quantized(src)):
            quantize_for(src, node)
        if scheme.quantize_outputs:
            out = node
            if len(node.users) == 1 and is_fused_activation(gm, next(iter(node.users))):
                out = next(iter(node.users))
            if not all(u.op == "output" for u in out.users):
                users = list(out.users)
                q = new_quant(out)
                for u in users:
                    u.replace_input_with(out, q)
    if not scheme.quantize_outputs:
        _quantize_residuals(gm, quantized, quantize_for)
    if scheme.int32_bias:
        _quantize_biases(gm)
    if count == 0 and not keep_float:
        raise BadInput("the student has no Conv2d or Linear layer to quantize")
    graph.lint()
    gm.recompile()
    return gm


def _from_conv(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Whether ``node`` is a Conv2d's output, directly or through a ReLU (the chain TensorRT fuses
    an Add into)."""
    while isinstance(node, fx.Node) and (
        is_fused_activation(gm, node) or isinstance(_module(gm, node), _PASS_MODULES)
    ):
        node = node.args[0]
    return isinstance(node, fx.Node) and isinstance(_module(gm, node), nn.Conv2d)


def _quantize_residuals(
    gm: fx.GraphModule, quantized: dict[fx.Node, fx.Node], quantize_for: Any
) -> None:
    """Q/DQ on residual Adds as TensorRT fuses them: ``Conv -> Add <- DequantizeLinear``.

    TensorRT runs an Add after a Conv as the Conv's epilogue in INT8 when the other (residual)
    input is quantized, and a Q/DQ pair on the Conv branch would split the two (NVIDIA's Q/DQ
    placement recommendations). So: an input that already has a quantizer (the block input that
    also feeds the next Conv) reads through it, at no cost; an input that is not a Conv's output
    gets one; of two Conv outputs without one, the second (the shortcut in ``out += identity``)
    does.
    """
    for node in list(gm.graph.nodes):
        if not _is_add(node) or len(node.args) != 2:
            continue
        inputs = list(node.args)
        if not all(isinstance(i, fx.Node) and i.op != "get_attr"
                   for i in inputs):  # fmt: skip
            continue
        for i in inputs:
            if i in quantized and quantized[i] is not i:
                node.replace_input_with(i, quantized[i])
        inputs = list(node.args)
        needs = [i for i in inputs if i not in quantized and not _from_conv(gm, i)]
        if not needs and not any(i in quantized for i in inputs):
            needs = [inputs[1]]
        for i in needs:
            quantize_for(i, node)


@torch.no_grad()
def _op_kind(gm: fx.GraphModule, node: fx.Node) -> str | None:
    if node.op == "call_module":
        mod = _module(gm, node)
        return (
            None
            if isinstance(mod, ActFakeQuant)
            else type(mod).__name__.removeprefix("Parametrized")
        )
    if node.op in ("call_function", "call_method"):
        return getattr(node.target, "__name__", str(node.target))
    return None


def placement_summary(model: fx.GraphModule) -> dict[str, dict[str, int]]:
    """Per op kind of a :func:`prepare_qat` model (module class or function name): how many
    calls, how many read only quantized tensors (the runtime can run them on integers) and how
    many have their output quantized. The rest run in float: the record of what a scheme left
    in float (SiLU, Hardswish, SE multiplies, LayerNorm... where the runtime has no kernel)."""

    def is_quant(node: Any) -> bool:
        while isinstance(node, fx.Node) and node.op != "get_attr":
            if node.op == "call_module" and isinstance(_module(model, node), ActFakeQuant):
                return True
            if not _is_transparent(model, node):
                return False
            node = node.args[0]
        return False

    counts: dict[str, Counter] = {}
    for node in model.graph.nodes:
        kind = _op_kind(model, node)
        tensors = [a for a in node.args if isinstance(a, fx.Node) and a.op != "get_attr"]
        if kind is None or not tensors:
            continue
        c = counts.setdefault(kind, Counter())
        c["count"] += 1
        c["quantized_inputs"] += all(is_quant(a) for a in tensors)
        c["quantized_output"] += any(
            u.op == "call_module" and isinstance(_module(model, u), ActFakeQuant)
            for u in node.users
        )
    return {kind: dict(c) for kind, c in sorted(counts.items())}


def _act_quant(gm: fx.GraphModule, node: object) -> ActFakeQuant | None:
    mod = _module(gm, node) if isinstance(node, fx.Node) else None
    return mod if isinstance(mod, ActFakeQuant) else None


def _input_quantizer(gm: fx.GraphModule, node: fx.Node) -> ActFakeQuant | None:
    """The activation quantizer whose values ``node`` (a layer) reads, through ops that keep
    values; None when its input is float."""
    src = node.args[0]
    while _act_quant(gm, src) is None and isinstance(src, fx.Node) and _is_transparent(gm, src):
        src = src.args[0]
    return _act_quant(gm, src)


def _weight_quantizer(mod: nn.Module) -> WeightFakeQuant:
    return next(p for p in mod.parametrizations.weight if isinstance(p, WeightFakeQuant))


def layer_quantizers(gm: fx.GraphModule, scheme: QuantScheme) -> dict[str, list[nn.Module]]:
    """Each quantized layer's own quantizers, in execution order: its weights', the activation
    quantizer on its input (through ops that keep values) and, where ``scheme`` quantizes
    outputs, those on its output (after a fused activation). Quantizers on other ops (residual
    Adds, qnn's every op) belong to no layer. (A layer's int32 bias follows its input and weight
    quantizers.)"""
    out: dict[str, list[nn.Module]] = {}
    for node in gm.graph.nodes:
        mod = _module(gm, node)
        if not isinstance(mod, _QUANTIZABLE) or not parametrize.is_parametrized(mod, "weight"):
            continue
        own: list[nn.Module] = [_weight_quantizer(mod)]
        own += [q for q in (_input_quantizer(gm, node),) if q is not None]
        if not scheme.quantize_outputs:
            out[node.target] = own
            continue
        tail = node
        if len(node.users) == 1 and is_fused_activation(gm, next(iter(node.users))):
            tail = next(iter(node.users))
        own += [q for q in (_act_quant(gm, u) for u in tail.users) if q is not None]
        out[node.target] = own
    return out


def _quantize_biases(gm: fx.GraphModule) -> None:
    """Round each quantized layer's bias as the runtime stores it: int32 at input scale x weight
    scale (ONNX Runtime's QLinearConv/QGemm), so that QAT trains what the runtime computes."""
    for node in gm.graph.nodes:
        mod = _module(gm, node)
        if (
            not isinstance(mod, _QUANTIZABLE)
            or mod.bias is None
            or not parametrize.is_parametrized(mod, "weight")
        ):
            continue
        act = _input_quantizer(gm, node)
        if act is not None:
            bias = BiasFakeQuant(act, _weight_quantizer(mod))
            parametrize.register_parametrization(mod, "bias", bias)


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


def freeze(model: nn.Module, biases: bool = True) -> None:
    """Fix every weight scale at its current value and, with ``biases``, store each rounded
    int32-style bias as a plain bias, as export needs constants (without: the state_dict keeps
    the layout of :func:`prepare_qat`'s model, to be loaded into one)."""
    for m in model.modules():
        if parametrize.is_parametrized(m, "weight"):
            for p in m.parametrizations.weight:
                if isinstance(p, WeightFakeQuant):
                    p.frozen = False
                    _ = m.weight  # recompute the scale from the current weights
                    p.freeze()
        if biases and parametrize.is_parametrized(m, "bias"):
            with torch.no_grad():
                parametrize.remove_parametrizations(m, "bias", leave_parametrized=True)
