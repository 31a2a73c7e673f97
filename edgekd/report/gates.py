"""The gates: pass/fail checks on the deployed model, each a record with its evidence.

A record is ``{name, status, evidence, measured_on_target}``: ``status`` is "passed", "failed"
or "skipped"; ``evidence`` is one line with the measured value and the bound (for a skipped gate:
why it was not checked); ``measured_on_target`` says whether the figures judged were measured on
the target device itself (False: on this host standing in for it; None: not a measurement on a
device, such as a lint of the graph).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["passed", "failed", "skipped"]


@dataclass(frozen=True)
class Gate:
    name: str
    status: Status
    evidence: str
    measured_on_target: bool | None = None


@dataclass
class Gates:
    """The gates of one validation, in the order they were decided."""

    records: list[Gate] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(g.status != "failed" for g in self.records)

    def check(self, ok: bool, name: str, evidence: str, on_target: bool | None = None) -> None:
        self.records.append(Gate(name, "passed" if ok else "failed", evidence, on_target))

    def skip(self, name: str, why: str, on_target: bool | None = None) -> None:
        self.records.append(Gate(name, "skipped", why, on_target))

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "records": [asdict(g) for g in self.records]}


def with_status(gates: dict[str, Any], status: Status) -> list[dict[str, Any]]:
    """The records of report.json's ``gates`` with ``status``, in order."""
    return [g for g in gates["records"] if g["status"] == status]


def failure_line(gates: dict[str, Any]) -> str:
    """The failed gates as one line, ``name: evidence`` each (the CLI's message on exit 3)."""
    return "; ".join(f"{g['name']}: {g['evidence']}" for g in with_status(gates, "failed"))


def accuracy_evidence(
    deployed: str, accuracy: float, teacher: float, allowed_pt: float | None
) -> str:
    """The deployed model's accuracy against the teacher's, and the drop allowed."""
    drop = 100 * (teacher - accuracy)
    allowed = "not recorded" if allowed_pt is None else f"{allowed_pt:g} pt"
    return (
        f"{deployed} {100 * accuracy:.2f} % vs teacher {100 * teacher:.2f} %: "
        f"{drop:.2f} pt below, allowed {allowed}"
    )


def latency_evidence(deployed: str, p90: float, budget: float) -> str:
    return f"{deployed} p90 {p90:.3f} ms, budget {budget:g} ms"


def int8_evidence(int8_p90: float, fp32_p90: float) -> str:
    speeds = f"student_int8 p90 {int8_p90:.3f} ms"
    if int8_p90 < fp32_p90:
        return f"{speeds}, faster than its float twin student_fp32 ({fp32_p90:.3f} ms)"
    return (
        f"{speeds} is not faster than its float twin student_fp32 ({fp32_p90:.3f} ms): INT8 costs "
        "accuracy and buys nothing (--keep-float auto keeps the layers whose INT8 kernels are "
        "slower in float)"
    )


def lint_evidence(violations: list[str]) -> str:
    if not violations:
        return "no TensorRT Q/DQ rule violations"
    return f"{len(violations)} TensorRT Q/DQ rule violation(s), first: {violations[0]}"


def kd_gain_evidence(gain: dict[str, Any], min_gain_pt: float | None) -> str:
    """The distillation gain over the baseline, its interval, and the least gain required."""
    lo, hi = gain["ci_pt"]
    bound = "not recorded" if min_gain_pt is None else f"{min_gain_pt:g} pt"
    return (
        f"distillation gains {gain['gain_pt']:+.2f} pt over the baseline trained on labels alone "
        f"({100 * gain['confidence']:g} % CI [{lo:+.2f}, {hi:+.2f}]), --min-kd-gain {bound}"
    )
