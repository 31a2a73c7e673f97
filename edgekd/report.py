"""report.json for machines and report.md for pull requests."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from edgekd.atomic import write_text
from edgekd.errors import BadInput

MODELS = ("teacher", "student_fp32", "student_int8")
SCHEMA_VERSION = 1  # report.json's "schema_version"; edgekd/schemas/report.schema.json describes it


def load_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of report.json."""
    text = resources.files("edgekd.schemas").joinpath("report.schema.json").read_text()
    return json.loads(text)


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f} %"


def _ms(stats: dict[str, Any] | None, key: str) -> str:
    return "—" if stats is None else f"{stats[key]:.3f}"


def _drift_lines(drift: dict[str, Any]) -> list[str]:
    """The layers that add the most error between the fake-quant student and the runtime."""
    layers = {layer["module"]: layer for layer in drift["layers"]}
    lines = [
        "",
        "### Drift (fake-quant vs ONNX Runtime)",
        "",
        "| layer | added rel. error | rel. error | max abs diff | cosine |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in drift["top"]:
        m = layers[name]
        lines.append(
            f"| {name} | {m['added_rel_l2']:+.2e} | {m['rel_l2']:.2e} | "
            f"{m['max_abs_diff']:.2e} | {m['cosine']:.6f} |"
        )
    logits = drift["logits"]
    lines += [
        "",
        f"On {drift['samples']} validation samples ({drift['runtime']}): logits max abs diff "
        f"{logits['max_abs_diff']:.2e}, top-1 agreement {_pct(logits['top1_agreement'])}; "
        f"TensorRT {drift['tensorrt']}.",
    ]
    return lines


def _quantization_lines(q: dict[str, Any]) -> list[str]:
    """Scheme, calibration, the layers kept in float and the most sensitive layers."""
    how = "post-training (calibration only)" if q.get("ptq") else "quantization-aware"
    lines = [
        "",
        "### Quantization",
        "",
        f"Scheme `{q['scheme']}`, {how}.",
    ]
    if "calibration" in q:
        cal = q["calibration"]
        lines[-1] += f" Calibration: {cal.get('method', 'max')} on {cal['samples']} samples."

    keep = q.get("keep_float", {})
    if keep.get("layers"):
        lines.append(f"Kept in float ({keep['mode']}): {', '.join(keep['layers'])}.")
    if q.get("unquantizable"):
        lines.append(f"Not quantizable by this scheme: {', '.join(q['unquantizable'])}.")
    ranking = q.get("sensitivity", {}).get("layers", [])[:3]
    if ranking:
        worst = ", ".join(
            f"{r['layer']} (KL {r['kl']:.2e}, {_pct(r['accuracy'])})" for r in ranking
        )
        lines.append(f"Most sensitive layers, each quantized alone: {worst}.")
    return lines


def render_markdown(report: dict[str, Any]) -> str:
    """A short Markdown summary: the verdict, one table, and how latency was measured."""
    gates = report["gates"]
    target = report["target"]
    verdict = "PASSED" if gates["passed"] else "FAILED"
    lines = [
        f"## edgekd: {report['student']['label']} for `{target['name']}` — {verdict}",
        "",
    ]
    lines += [f"- ❌ {f}" for f in gates["failed"]]
    lines += [f"- ⚠️ not checked: {s}" for s in gates["skipped"]]
    if gates["passed"]:
        lines.append(f"- ✅ gates passed: {', '.join(gates['checked'])}")
    lines += [
        "",
        "| model | accuracy | agreement with teacher | params | file MB | p50 ms | p90 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in MODELS:
        if name not in report["latency_ms"]:
            continue
        lat = report["latency_ms"][name]
        params = report["params"]["teacher" if name == "teacher" else "student"]
        agree = "—" if name == "teacher" else _pct(report["agreement"].get(name))
        lines.append(
            f"| {name} | {_pct(report['accuracy'][name])} | {agree} | {params:,} | "
            f"{report['model_mb'][name]:.3f} | {_ms(lat, 'p50')} | {_ms(lat, 'p90')} | {_ms(lat, 'p99')} |"
        )
    where = {lat["where"] for lat in report["latency_ms"].values()}
    n = {lat["n"] for lat in report["latency_ms"].values()}
    lines += [
        "",
        f"Latency: batch 1, single stream, {min(n)}+ timed queries after warm-up; {'; '.join(sorted(where))}.",
        f"Accuracy on {report['data']['val_samples']:,} validation samples ({report['data']['source']}).",
    ]
    ratio = report.get("latency_ratio", {}).get("student_int8_vs_fp32")
    if ratio is not None:
        lines.append(f"INT8 / fp32 p90 latency: {ratio:.2f}×.")
    if report.get("quantization"):
        lines += _quantization_lines(report["quantization"])
    if "drift" in report:
        lines += _drift_lines(report["drift"])
    return "\n".join(lines) + "\n"


def regenerate(run_dir: str | Path) -> dict[str, Any]:
    """Rewrite ``report.md`` from a run folder's ``report.json``; return the report."""
    path = Path(run_dir) / "report.json"
    if not path.is_file():
        raise BadInput(f"{path} is missing; run edgekd compress or validate first")
    try:
        report = json.loads(path.read_text())
        version = report.get("schema_version") if isinstance(report, dict) else None
        if version != SCHEMA_VERSION:
            raise BadInput(
                f"{path}: schema_version {version!r}, this edgekd reads {SCHEMA_VERSION}"
            )
        markdown = render_markdown(report)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise BadInput(f"{path}: not a readable edgekd report ({type(e).__name__}: {e})") from None
    write_text(path.parent / "report.md", markdown)
    return report
