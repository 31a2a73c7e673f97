"""Pick the largest student of a family that meets a target's budgets.

Latency here is a roofline estimate from the target's datasheet figures:
``max(2 * MACs / peak ops, bytes moved / bandwidth)``. It is a lower bound that ignores per-op
overheads; validation replaces it with a measurement on the runtime.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from edgekd.errors import BadInput
from edgekd.models.profile import ModelProfile, profile
from edgekd.models.students import StudentSpec, build_student, candidates
from edgekd.targets import Target


@dataclass(frozen=True)
class Candidate:
    """A student's estimated cost on a target, and the budgets it breaks."""

    spec: StudentSpec
    params: int
    macs: int
    model_mb: float
    memory_mb: float
    latency_ms: float | None
    violations: tuple[str, ...]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["spec"] = self.spec.label
        return d


def deploy_precision(target: Target) -> str:
    """The arithmetic the student will run in on ``target``."""
    return "fp16" if target.quant_scheme == "none" else "int8"


def estimate(prof: ModelProfile, target: Target) -> tuple[float, float, float | None]:
    """(model MB, memory MB, roofline latency ms or None when the target lacks the figures)."""
    precision = deploy_precision(target)
    nbytes = 1 if precision == "int8" else 2
    weights = prof.weight_bytes(nbytes)
    moved = weights + prof.activation_elems * nbytes
    peak = target.peak_ops_per_s(precision)
    bandwidth = target.bytes_per_s
    latency = None
    if peak and bandwidth:
        latency = max(2 * prof.macs / peak, moved / bandwidth) * 1e3
    return weights / 1e6, moved / 1e6, latency


def evaluate(
    spec: StudentSpec,
    target: Target,
    input_shape: tuple[int, int, int],
    num_classes: int,
    max_params: int,
) -> Candidate:
    """Cost of ``spec`` on ``target`` and which budgets it exceeds."""
    with torch.device("meta"):  # shapes only: no weights initialised, nothing computed
        model = build_student(spec, input_shape[0], num_classes)
    prof = profile(model, input_shape)
    model_mb, memory_mb, latency = estimate(prof, target)
    b = target.budgets
    violations = []
    if prof.params > max_params:
        violations.append(f"params {prof.params:,} > {max_params:,}")
    if model_mb > b.max_model_mb:
        violations.append(f"model {model_mb:.2f} MB > {b.max_model_mb} MB")
    if memory_mb > b.max_memory_mb:
        violations.append(f"memory {memory_mb:.1f} MB > {b.max_memory_mb} MB")
    if latency is not None and latency > b.p90_latency_ms:
        violations.append(f"estimated latency {latency:.3f} ms > {b.p90_latency_ms} ms")
    return Candidate(spec, prof.params, prof.macs, model_mb, memory_mb, latency, tuple(violations))


@dataclass(frozen=True)
class SizingDecision:
    """The chosen student, why, and what else was considered."""

    chosen: Candidate
    max_params: int
    reasons: list[str]
    considered: int
    feasible: int

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
        }


def size_student(
    target: Target,
    input_shape: tuple[int, int, int],
    num_classes: int,
    teacher_params: int,
    *,
    family: str = "convnet",
    min_compression: float = 8.0,
) -> SizingDecision:
    """The largest member of ``family`` within ``target``'s budgets and ``min_compression``.

    "Largest" is by parameter count, then by MACs: within a budget, capacity is what a
    distilled student most needs.
    """
    max_params = min(target.budgets.max_params, int(teacher_params / min_compression))
    cands = [evaluate(s, target, input_shape, num_classes, max_params) for s in candidates(family)]
    ok = [c for c in cands if not c.violations]
    if not ok:
        smallest = min(cands, key=lambda c: (c.params, c.macs))
        raise BadInput(
            f"no {family} student meets the budgets of target {target.name}: the smallest, "
            f"{smallest.spec.label}, breaks {'; '.join(smallest.violations)}"
        )
    best = max(ok, key=lambda c: (c.params, c.macs))
    latency = (
        f"{best.latency_ms:.3f} ms estimated (roofline) <= {target.budgets.p90_latency_ms} ms"
        if best.latency_ms is not None
        else "latency not estimated (the target profile lacks peak ops or bandwidth)"
    )
    reasons = [
        f"largest of {len(ok)} feasible {family} students out of {len(cands)}",
        f"params {best.params:,} <= {max_params:,} (target budget {target.budgets.max_params:,}, "
        f"teacher {teacher_params:,} / {min_compression:g})",
        f"model {best.model_mb:.3f} MB ({deploy_precision(target)}) <= {target.budgets.max_model_mb} MB",
        latency,
    ]
    bigger = [c for c in cands if c.params > best.params]
    if bigger:
        nxt = min(bigger, key=lambda c: c.params)
        reasons.append(f"next larger, {nxt.spec.label}, breaks {'; '.join(nxt.violations)}")
    return SizingDecision(best, max_params, reasons, len(cands), len(ok))
