"""``edgekd compare``: several runs (say, one per target) side by side in one table."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from html import escape
from pathlib import Path
from typing import Any

from edgekd.errors import BadInput
from edgekd.report.gates import with_status
from edgekd.report.read import load_report
from edgekd.report.schema import MODELS

Cell = Callable[[dict[str, Any]], str]


def _get(report: dict[str, Any], *path: str) -> Any:
    value: Any = report
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _fmt(fmt: str, *path: str) -> Cell:
    def cell(report: dict[str, Any]) -> str:
        value = _get(report, *path)
        return "—" if value is None else fmt.format(value)

    return cell


def _pct(*path: str) -> Cell:
    def cell(report: dict[str, Any]) -> str:
        value = _get(report, *path)
        return "—" if value is None else f"{100 * value:.2f} %"

    return cell


def _interval(*path: str) -> Cell:
    def cell(report: dict[str, Any]) -> str:
        value = _get(report, *path)
        return "—" if value is None else f"[{value[0]:+.2f}, {value[1]:+.2f}]"

    return cell


def _verdict(report: dict[str, Any]) -> str:
    gates = report["gates"]
    if gates["passed"]:
        return "PASSED"
    return "FAILED: " + ", ".join(g["name"] for g in with_status(gates, "failed"))


def _where(report: dict[str, Any]) -> str:
    if not all(lat["on_target"] for lat in report["latency_ms"].values()):
        return "this host, not the target"
    return "on the target (this host)" if report["target"]["family"] == "host" else "on the target"


ROWS: list[tuple[str, Cell]] = [
    ("target", _fmt("`{}`", "target", "name")),
    ("runtime, precision", lambda r: f"{r['target']['runtime']}, {r['target']['precision']}"),
    ("student", _fmt("{}", "student", "label")),
    ("deployed", _fmt("{}", "student", "deployed")),
    ("verdict", _verdict),
    ("validation samples", _fmt("{:,}", "data", "val_samples")),
    *((f"accuracy {m}", _pct("accuracy", m)) for m in MODELS),
    *((f"agreement {m}", _pct("agreement", m)) for m in MODELS[1:]),
    *((f"p90 ms {m}", _fmt("{:.3f}", "latency_ms", m, "p90")) for m in MODELS),
    ("p90 budget ms", _fmt("{:g}", "target", "p90_budget_ms")),
    ("latency measured", _where),
    ("distillation gain pt", _fmt("{:+.2f}", "distillation_gain", "gain_pt")),
    ("gain 95 % CI pt", _interval("distillation_gain", "ci_pt")),
    ("params teacher", _fmt("{:,}", "params", "teacher")),
    ("params student", _fmt("{:,}", "params", "student")),
    *((f"file MB {m}", _fmt("{:.3f}", "model_mb", m)) for m in MODELS),
]


def load_runs(runs: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Each run folder's report.json; the first folder without a readable one is a BadInput."""
    if len(runs) < 2:
        raise BadInput("compare needs at least two run folders")
    reports = []
    for run in runs:
        if not (Path(run) / "report.json").is_file():
            raise BadInput(
                f"{run}: no report.json (not a run folder, or not validated yet: run "
                "edgekd validate on it)"
            )
        reports.append(load_report(run))
    return reports


def table(runs: Sequence[str | Path], reports: Sequence[dict[str, Any]]) -> list[list[str]]:
    """The comparison as rows of cells: a header row (the runs), then one row per quantity."""
    rows = [["", *(str(run) for run in runs)]]
    rows += [[label, *(cell(r) for r in reports)] for label, cell in ROWS]
    return rows


def render_markdown(rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    align = ["---", *("---:" for _ in rows[0][1:])]
    return "\n".join([line(rows[0]), "|" + "|".join(align) + "|", *map(line, rows[1:])]) + "\n"


def render_html(rows: list[list[str]]) -> str:
    """A self-contained page with the same table."""
    head = "".join(f"<th>{escape(c)}</th>" for c in rows[0])
    body = "".join(
        f"<tr><th>{escape(row[0])}</th>"
        + "".join(f"<td>{escape(c.strip('`'))}</td>" for c in row[1:])
        + "</tr>"
        for row in rows[1:]
    )
    style = (
        "body{font:15px/1.45 system-ui,sans-serif;margin:20px}table{border-collapse:collapse}"
        "th,td{border:1px solid #e5e7eb;padding:4px 10px;text-align:right}"
        "tbody th{text-align:left;background:#f9fafb}thead th{background:#f3f4f6}"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>edgekd compare'
        f"</title><style>{style}</style></head><body><h1>edgekd runs side by side</h1>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></body></html>\n"
    )
