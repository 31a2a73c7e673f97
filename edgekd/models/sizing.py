"""Pick the student that a target's budgets and runtime allow, from one family or all of them.

Every candidate is profiled at the data's input shape (parameters, multiply-accumulates, layers)
and its latency estimated by :func:`edgekd.roofline.roofline`: the roofline from the target's
datasheet figures plus its per-inference and per-layer overheads. An estimate; validation
replaces it with a measurement on the runtime.

The choice among the candidates that meet every budget is by an accuracy proxy: families whose
activations all run in INT8 under the target's scheme first, then architectures proven on edge
hardware before edgekd's own ``convnet``, then the most parameters, then the most
multiply-accumulates: within budgets that bound both (and the latency), capacity is what a
distilled student most needs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cache

import torch
from torch import nn

from edgekd.errors import BadInput
from edgekd.models.profile import ModelProfile, profile
from edgekd.models.students import FAMILIES, StudentSpec, build_student, candidates, unavailable
from edgekd.roofline import GraphCost, roofline
from edgekd.targets import Target

AUTO = "auto"  # every family that imports here


@dataclass(frozen=True)
class Candidate:
    """A student's estimated cost on a target, and the budgets it breaks."""

    spec: StudentSpec
    params: int
    macs: int
    model_mb: float
    memory_mb: float
    latency_ms: float | None  # the estimate: roofline + the target's overheads
    violations: tuple[str, ...]
    layers: int = 0
    roofline_ms: float | None = None  # the roofline alone
    overhead_ms: float | None = None
    int8_friendly: bool = True  # every activation runs in INT8 under the target's scheme

    def to_dict(self) -> dict:
        d = asdict(self)
        d["spec"] = self.spec.label
        return d


def deploy_precision(target: Target) -> str:
    """The arithmetic the student will run in on ``target``."""
    return "fp16" if target.quant_scheme == "none" else "int8"


def _estimate(prof: ModelProfile, target: Target) -> tuple[float, float, dict | None]:
    """(model MB, memory MB, :func:`roofline`'s record or None) of ``prof`` deployed on ``target``."""
    precision = deploy_precision(target)
    nbytes = 1 if precision == "int8" else 2
    weights = prof.weight_bytes(nbytes)
    cost = GraphCost(
        macs=prof.macs, weight_bytes=int(weights), activation_elems=prof.activation_elems,
        int8_weights=precision == "int8", layers=prof.layers,
    )  # fmt: skip
    moved = weights + prof.activation_elems * nbytes
    return weights / 1e6, moved / 1e6, roofline(cost, target)


def estimate(prof: ModelProfile, target: Target) -> tuple[float, float, float | None]:
    """(model MB, memory MB, estimated latency ms or None when the target lacks the figures)."""
    model_mb, memory_mb, roof = _estimate(prof, target)
    return model_mb, memory_mb, None if roof is None else roof["estimate_ms"]


def assess(
    spec: StudentSpec,
    prof: ModelProfile,
    target: Target,
    max_params: int,
    max_macs: int | None = None,
) -> Candidate:
    """Cost of a profiled student on ``target`` and which budgets it exceeds."""
    model_mb, memory_mb, roof = _estimate(prof, target)
    b = target.budgets
    violations = []
    if prof.params > max_params:
        violations.append(f"params {prof.params:,} > {max_params:,}")
    if max_macs is not None and prof.macs > max_macs:
        violations.append(f"MACs {prof.macs:,} > {max_macs:,}")
    if model_mb > b.max_model_mb:
        violations.append(f"model {model_mb:.2f} MB > {b.max_model_mb} MB")
    if memory_mb > b.max_memory_mb:
        violations.append(f"memory {memory_mb:.1f} MB > {b.max_memory_mb} MB")
    latency = None if roof is None else roof["estimate_ms"]
    if latency is not None and latency > b.p90_latency_ms:
        violations.append(f"estimated latency {latency:.3f} ms > {b.p90_latency_ms} ms")
    family = FAMILIES.get(spec.family)
    return Candidate(
        spec, prof.params, prof.macs, model_mb, memory_mb, latency, tuple(violations),
        layers=prof.layers,
        roofline_ms=None if roof is None else roof["latency_ms"],
        overhead_ms=None if roof is None else roof["overhead_ms"],
        int8_friendly=family is None or family.int8_friendly(target.quant_scheme),
    )  # fmt: skip


@cache
def _profile(
    spec: StudentSpec, input_shape: tuple[int, int, int], num_classes: int
) -> ModelProfile:
    with torch.device("meta"):  # shapes only: no weights initialised, nothing computed
        model = build_student(spec, input_shape[0], num_classes, max(input_shape[1:]))
    return profile(model, input_shape)


def evaluate(
    spec: StudentSpec,
    target: Target,
    input_shape: tuple[int, int, int],
    num_classes: int,
    max_params: int,
    max_macs: int | None = None,
) -> Candidate:
    """Cost of ``spec`` on ``target`` and which budgets it exceeds."""
    return assess(
        spec, _profile(spec, tuple(input_shape), num_classes), target, max_params, max_macs
    )


def _rank(c: Candidate) -> tuple:
    """The accuracy proxy (module docstring): larger is better."""
    return (c.int8_friendly, FAMILIES[c.spec.family].proven, c.params, c.macs)


@dataclass(frozen=True)
class SizingDecision:
    """The chosen student, why, and what else was considered."""

    chosen: Candidate
    max_params: int
    reasons: list[str]
    considered: int
    feasible: int
    max_macs: int | None = None
    families: list[str] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)  # family -> why it is not here
    candidates: list[Candidate] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "student": self.chosen.spec.label,
            "family": self.chosen.spec.family,
            "width": self.chosen.spec.width,
            "depth": self.chosen.spec.depth,
            "estimate": self.chosen.to_dict(),
            "max_params": self.max_params,
            "considered": self.considered,
            "feasible": self.feasible,
            "reasons": self.reasons,
            "max_macs": self.max_macs,
            "families": self.families,
            "unavailable": self.unavailable,
            "candidates": [
                {
                    "student": c.spec.label, "params": c.params, "macs": c.macs,
                    "latency_ms": c.latency_ms, "int8_friendly": c.int8_friendly,
                    "violations": list(c.violations),
                }
                for c in self.candidates
            ],
            "warnings": [],
        }  # fmt: skip


def _sweep(family: str, evaluate_one) -> list[Candidate]:
    """The members of ``family``, width by width within each depth, up to and including the first
    that breaks a budget: every budget grows with width, so wider members break it too."""
    out: list[Candidate] = []
    specs = candidates(family)
    for depth in sorted({s.depth for s in specs}):
        for spec in sorted((s for s in specs if s.depth == depth), key=lambda s: s.width):
            c = evaluate_one(spec)
            out.append(c)
            if c.violations:
                break
    return out


def size_student(
    target: Target,
    input_shape: tuple[int, int, int],
    num_classes: int,
    teacher_params: int,
    *,
    family: str = "convnet",
    min_compression: float = 8.0,
    teacher_macs: int | None = None,
) -> SizingDecision:
    """The best student (by the module's accuracy proxy) within ``target``'s budgets and at least
    ``min_compression`` times smaller than the teacher in parameters, and with no more
    multiply-accumulates than the teacher when ``teacher_macs`` (at the same input shape) is known
    (None or 0: not known, e.g. a teacher whose convolutions are not ``nn`` modules).

    ``family`` is one family's name, or ``"auto"`` for every family that imports here (the others
    are listed in :attr:`SizingDecision.unavailable`; ``convnet`` always imports).
    """
    max_params = min(target.budgets.max_params, int(teacher_params / min_compression))
    max_macs = teacher_macs or None  # never more compute than the teacher
    missing = unavailable()
    names = [n for n in FAMILIES if n not in missing] if family == AUTO else [family]
    shape = tuple(input_shape)
    cands = [
        c
        for name in names
        for c in _sweep(
            name, lambda s: evaluate(s, target, shape, num_classes, max_params, max_macs)
        )
    ]
    ok = [c for c in cands if not c.violations]
    what = "student of any available family" if family == AUTO else f"{family} student"
    if not ok:
        smallest = min(cands, key=lambda c: (c.params, c.macs))
        raise BadInput(
            f"no {what} meets the budgets of target {target.name}: the smallest, "
            f"{smallest.spec.label}, breaks {'; '.join(smallest.violations)} "
            f"(lower --min-compression, or give --student)"
        )
    best = max(ok, key=_rank)
    latency = (
        f"{best.latency_ms:.3f} ms estimated (roofline {best.roofline_ms:.3f} ms + overhead "
        f"{best.overhead_ms:.3f} ms for {best.layers} layers) <= {target.budgets.p90_latency_ms} ms"
        if best.latency_ms is not None
        else "latency not estimated (the target profile lacks peak ops or bandwidth)"
    )
    scope = f"{len(names)} families ({', '.join(names)})" if family == AUTO else family
    reasons = [
        f"best by the accuracy proxy (INT8-friendly, proven family, params, MACs) of {len(ok)} "
        f"feasible students out of {len(cands)} considered from {scope}",
        f"params {best.params:,} <= {max_params:,} (target budget {target.budgets.max_params:,}, "
        f"teacher {teacher_params:,} / {min_compression:g})",
        f"MACs {best.macs:,} at {'x'.join(map(str, shape))}"
        + (
            f" <= {max_macs:,} (the teacher's: a student never costs more compute)"
            if max_macs
            else ""
        ),
        f"model {best.model_mb:.3f} MB ({deploy_precision(target)}) <= {target.budgets.max_model_mb} MB",
        latency,
    ]
    if not best.int8_friendly:
        reasons.append(
            f"{best.spec.family}'s {FAMILIES[best.spec.family].activation} has no integer kernel "
            f"under the {target.quant_scheme} scheme, and no INT8-friendly student fits"
        )
    if family == AUTO and missing:
        reasons.append(
            "unavailable here: " + "; ".join(f"{n} ({why})" for n, why in missing.items())
        )
    same = [
        c for c in cands if c.spec.family == best.spec.family and c.spec.depth == best.spec.depth
    ]
    bigger = [c for c in same if c.spec.width > best.spec.width]
    if bigger:
        nxt = min(bigger, key=lambda c: c.spec.width)
        reasons.append(f"next larger, {nxt.spec.label}, breaks {'; '.join(nxt.violations)}")
    return SizingDecision(
        best, max_params, reasons, len(cands), len(ok), max_macs, names, missing, cands
    )


def check_student(
    model: nn.Module,
    label: str,
    target: Target,
    input_shape: tuple[int, int, int],
    teacher_params: int,
    *,
    min_compression: float = 8.0,
    teacher_macs: int | None = None,
) -> dict:
    """The sizing record of a student the user gave (``--student``): its estimate on ``target``
    and, as warnings, every budget it breaks (the run goes on: the user chose it)."""
    max_params = min(target.budgets.max_params, int(teacher_params / min_compression))
    max_macs = teacher_macs or None  # never more compute than the teacher
    prof = profile(model, tuple(input_shape))
    c = assess(StudentSpec(f"user: {label}", 1.0, 1.0), prof, target, max_params, max_macs)
    estimate_ = c.to_dict()
    estimate_["spec"] = f"user: {label}"
    return {
        "student": f"user: {label}",
        "estimate": estimate_,
        "max_params": max_params,
        "max_macs": max_macs,
        "reasons": ["given with --student; checked against the budgets, not sized"],
        "warnings": [f"--student {label}: {v}" for v in c.violations],
    }
