"""Feature taps for feature and relation losses: which modules to hook, and pairing them.

Names resolve to modules that are called on their own in the forward pass, for the float student
and for the torch.fx GraphModule that QAT makes of it (fx flattens containers and folds BatchNorm
into the convolution before it), so that both stages tap the same point.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import fx, nn

from edgekd.errors import BadInput
from edgekd.models.teacher import ExportedTeacher, OnnxTeacher

Shape = tuple[int, ...]
_POOLING = (
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.LPPool2d,
    nn.FractionalMaxPool2d,
)


@dataclass(frozen=True)
class Pair:
    """A teacher module whose output the student module's output should match."""

    teacher: str
    student: str


def parse_pairs(texts: list[str]) -> list[Pair]:
    """``"teacher.layer3=student.stage2"`` -> ``Pair("layer3", "stage2")``; prefixes optional."""
    pairs = []
    for text in texts:
        left, sep, right = text.partition("=")
        teacher = left.strip().removeprefix("teacher.")
        student = right.strip().removeprefix("student.")
        if not sep or "=" in right or not teacher or not student:
            raise BadInput(f"bad --pair {text!r}: expected teacher.MODULE=student.MODULE")
        pairs.append(Pair(teacher, student))
    return pairs


def _check_hookable(model: nn.Module) -> None:
    if isinstance(model, OnnxTeacher | ExportedTeacher | torch.jit.ScriptModule):
        raise BadInput(
            "feature and relation losses need a teacher given as module:factory or "
            "file.py:factory (TorchScript, ONNX and exported teachers cannot be hooked)"
        )


def _children(m: nn.Module) -> list[tuple[str, nn.Module]]:
    """Submodules, without the containers that ``torch.nn.utils.parametrize`` adds."""
    return [(n, c) for n, c in m.named_children() if n != "parametrizations"]


def _module_names(model: nn.Module) -> list[str]:
    return [n for n, _ in model.named_modules() if n and ".parametrizations" not in f".{n}"]


def _near(name: str, names: list[str]) -> str:
    near = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    return f"; near names: {', '.join(near)}" if near else f"; it has: {', '.join(names[:8])}"


def _resolve_graph(gm: fx.GraphModule, name: str) -> str | None:
    """A called module of ``gm`` for ``name``: itself, its last called leaf, or the folded-into conv."""
    called = [n.target for n in gm.graph.nodes if n.op == "call_module"]
    if name in called:
        return name
    inside = [c for c in called if c.startswith(name + ".")]
    if inside:
        return inside[-1]
    # a BatchNorm that prepare_qat folded into the convolution just before it in an nn.Sequential
    parent, _, index = name.rpartition(".")
    if not index.isdigit() or index == "0":
        return None
    before = f"{parent}.{int(index) - 1}" if parent else str(int(index) - 1)
    conv = before in called and isinstance(gm.get_submodule(before), nn.modules.conv._ConvNd)
    return before if conv else None


def resolve(model: nn.Module, name: str, what: str) -> str:
    """The module of ``model`` to hook for ``name`` (``what``: "teacher"/"student", for messages).

    An ``nn.Sequential`` maps to the last leaf inside it, which gives its output, e.g.
    ``features.3`` -> ``features.3.2``; other modules are hooked themselves. On the GraphModule
    that :func:`prepare_qat` makes (containers flattened, BatchNorm folded) the same name maps to
    the same point: the module itself, the last module called inside it, or for a folded
    BatchNorm the convolution before it.
    """
    _check_hookable(model)
    if isinstance(model, fx.GraphModule):
        found = _resolve_graph(model, name)
        if found is None:
            raise BadInput(f"the {what} has no module {name!r}{_near(name, _module_names(model))}")
        return found
    modules = dict(model.named_modules())
    if not name or name not in modules or ".parametrizations" in f".{name}":
        raise BadInput(f"the {what} has no module {name!r}{_near(name, _module_names(model))}")
    module = modules[name]
    if isinstance(module, nn.ModuleList | nn.ModuleDict):
        raise BadInput(
            f"{what} module {name!r} is a {type(module).__name__}, never called itself; "
            "name one of the modules in it"
        )
    while isinstance(module, nn.Sequential) and len(module):
        child, module = list(module.named_children())[-1]
        name = f"{name}.{child}"
    return name


def _last_linear(model: nn.Module) -> nn.Linear:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise BadInput("embedding losses need a model whose classifier is an nn.Linear")
    return linears[-1]


class FeatureTap:
    """Forward hooks on named modules; collects their outputs each forward pass."""

    def __init__(self, model: nn.Module, names: list[str], embedding: bool = False):
        """Hook ``names`` (resolved with :func:`resolve`) and, with ``embedding``, the input of
        the last ``nn.Linear`` (the classifier)."""
        _check_hookable(model)
        self.names = [resolve(model, n, "model") for n in names]
        self._features: dict[int, torch.Tensor] = {}
        self._embedding: torch.Tensor | None = None
        self._handles = [
            model.get_submodule(n).register_forward_hook(partial(self._keep, i))
            for i, n in enumerate(self.names)
        ]
        self.embedding = embedding
        if embedding:
            self._handles.append(_last_linear(model).register_forward_pre_hook(self._keep_input))

    def _keep(self, i: int, module: nn.Module, args: Any, output: torch.Tensor) -> None:
        # a copy: an in-place op after the module (ReLU(inplace=True)) would change the output
        self._features[i] = output.clone()

    def _keep_input(self, module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        self._embedding = args[0]

    def take(self) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """(features in ``names`` order, embedding) from the last forward pass; clears them."""
        missing = [n for i, n in enumerate(self.names) if i not in self._features]
        if missing or (self.embedding and self._embedding is None):
            what = f"module {missing[0]!r}" if missing else "the classifier (last nn.Linear)"
            raise BadInput(f"{what} was not called in the forward pass; tap another module")
        features = [self._features[i] for i in range(len(self.names))]
        embedding = self._embedding
        self._features, self._embedding = {}, None
        return features, embedding

    def close(self) -> None:
        """Remove the hooks."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> FeatureTap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@torch.no_grad()
def _forward(model: nn.Module, sample: torch.Tensor) -> None:
    """Run ``model`` in eval mode on ``sample`` (moved to the model's device), for its hooks."""
    param = next(model.parameters(), None)
    was_training = model.training
    model.eval()
    try:
        model(sample if param is None else sample.to(param.device))
    finally:
        model.train(was_training)


def _taps(
    model: nn.Module, names: list[str], sample: torch.Tensor, embedding: bool = False
) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    with FeatureTap(model, names, embedding) as tap:
        _forward(model, sample)
        return tap.take()


def _stages(model: nn.Module, sample: torch.Tensor) -> list[tuple[str, Shape]]:
    """(leaf module, output shape without batch) for the last module before each spatial
    downsampling and the last feature map before global pooling, in forward order."""
    _check_hookable(model)
    calls: list[tuple[str, Shape]] = []

    def record(name: str, module: nn.Module, args: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor) and output.ndim == 4:
            if not isinstance(module, _POOLING):  # pooling only repeats or reduces its input
                calls.append((name, tuple(output.shape[1:])))

    handles = [
        model.get_submodule(n).register_forward_hook(partial(record, n))
        for n in _module_names(model)
        if not _children(model.get_submodule(n))
    ]
    try:
        _forward(model, sample)
    finally:
        for h in handles:
            h.remove()
    return [
        c for k, c in enumerate(calls) if k + 1 == len(calls) or calls[k + 1][1][1:] != c[1][1:]
    ]


def auto_pairs(teacher: nn.Module, student: nn.Module, sample: torch.Tensor) -> list[Pair]:
    """Pair teacher and student stage outputs of equal spatial size, matching from the last stage.

    A stage output is the last module before a spatial downsampling, or the last feature map
    before global pooling. Empty when no sizes match.
    """
    t_stages, s_stages = _stages(teacher, sample), _stages(student, sample)
    pairs: list[Pair] = []
    i, j = len(t_stages) - 1, len(s_stages) - 1
    while i >= 0 and j >= 0:
        (t_name, t_shape), (s_name, s_shape) = t_stages[i], s_stages[j]
        t_area, s_area = t_shape[1] * t_shape[2], s_shape[1] * s_shape[2]
        if t_shape[1:] == s_shape[1:]:
            pairs.append(Pair(t_name, s_name))
            i, j = i - 1, j - 1
        elif t_area < s_area:
            i -= 1
        else:
            j -= 1
    return pairs[::-1]


def feature_shapes(
    teacher: nn.Module, student: nn.Module, pairs: list[Pair], sample: torch.Tensor
) -> list[tuple[Shape, Shape]]:
    """Per pair, (student feature shape, teacher feature shape), without the batch dimension."""
    t_feats, _ = _taps(teacher, [p.teacher for p in pairs], sample)
    s_feats, _ = _taps(student, [p.student for p in pairs], sample)
    return [(tuple(s.shape[1:]), tuple(t.shape[1:])) for s, t in zip(s_feats, t_feats, strict=True)]


def embedding_dims(teacher: nn.Module, student: nn.Module, sample: torch.Tensor) -> tuple[int, int]:
    """(student D, teacher D): the input sizes of their classifiers (last ``nn.Linear``)."""
    _, t_emb = _taps(teacher, [], sample, embedding=True)
    _, s_emb = _taps(student, [], sample, embedding=True)
    return s_emb.shape[-1], t_emb.shape[-1]
