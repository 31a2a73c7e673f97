"""Reading a run folder's report.json, in this version of the schema or an older one.

A version-1 report kept its gates as prose lists (``checked`` names; ``failed`` and ``skipped``
lines ``"name: why"``) and said only in each latency's ``where`` text whether it was measured on
the target; :func:`from_v1` turns it into a version-2 report in memory.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from edgekd.errors import BadInput
from edgekd.report.gates import (
    Gates,
    accuracy_evidence,
    int8_evidence,
    kd_gain_evidence,
    latency_evidence,
    lint_evidence,
)
from edgekd.report.schema import SCHEMA_VERSION

# the order validate decides the gates in; a version-1 report kept checked and skipped apart
GATE_ORDER = ("accuracy_drop", "latency_budget", "int8_pays", "tensorrt_qdq_lint", "kd_gain")
MEASURED_GATES = {"accuracy_drop", "latency_budget", "int8_pays"}  # judged on measured figures


def load_report(run_dir: str | Path) -> dict[str, Any]:
    """A run folder's ``report.json`` in the current schema version (version 1 converted), or
    BadInput when it is missing, unreadable or of a version this edgekd does not read."""
    path = Path(run_dir) / "report.json"
    if not path.is_file():
        raise BadInput(f"{path} is missing; run edgekd compress or validate first")
    try:
        report = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise BadInput(f"{path}: not a readable edgekd report ({type(e).__name__}: {e})") from None
    version = report.get("schema_version") if isinstance(report, dict) else None
    if version == SCHEMA_VERSION:
        return report
    if version != 1:
        raise BadInput(
            f"{path}: schema_version {version!r}, this edgekd reads 1 and {SCHEMA_VERSION}"
        )
    try:
        return from_v1(report)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise BadInput(
            f"{path}: not a readable version-1 report ({type(e).__name__}: {e})"
        ) from None


def from_v1(report: dict[str, Any]) -> dict[str, Any]:
    """A version-1 report as version 2: latencies marked ``on_target``, gates as records."""
    out = copy.deepcopy(report)
    suffix = f" (this host, not {report['target']['name']})"  # what version 1 appended then
    for lat in out["latency_ms"].values():
        lat["on_target"] = not lat["where"].endswith(suffix)
    on_target = out["latency_ms"][out["student"]["deployed"]]["on_target"]
    old = report["gates"]
    why, skipped = _by_name(old["failed"]), _by_name(old["skipped"])
    gates = Gates()
    for name in sorted([*old["checked"], *skipped], key=GATE_ORDER.index):
        measured = on_target if name in MEASURED_GATES else None
        if name in skipped:
            gates.skip(name, skipped[name], measured)
        else:
            evidence = why[name] if name in why else _passed_evidence(out, name)
            gates.check(name not in why, name, evidence, measured)
    out["gates"] = gates.to_dict()
    out["schema_version"] = SCHEMA_VERSION
    return out


def _by_name(lines: list[str]) -> dict[str, str]:
    """Version-1 gate lines ``"name: why"`` as {name: why}."""
    return {name: text for name, _, text in (line.partition(": ") for line in lines)}


def _passed_evidence(report: dict[str, Any], name: str) -> str:
    """A passed gate's evidence from the figures of a report (version 1 recorded none)."""
    deployed = report["student"]["deployed"]
    config, acc, lat = report.get("config") or {}, report["accuracy"], report["latency_ms"]
    if name == "accuracy_drop":
        return accuracy_evidence(
            deployed, acc[deployed], acc["teacher"], config.get("max_accuracy_drop")
        )
    if name == "latency_budget":
        return latency_evidence(deployed, lat[deployed]["p90"], report["target"]["p90_budget_ms"])
    if name == "int8_pays":
        return int8_evidence(lat["student_int8"]["p90"], lat["student_fp32"]["p90"])
    if name == "tensorrt_qdq_lint":
        return lint_evidence((report.get("export") or {}).get("tensorrt_lint") or [])
    if name == "kd_gain":
        return kd_gain_evidence(report["distillation_gain"], config.get("min_kd_gain"))
    raise ValueError(f"unknown gate {name!r}")
