"""report.md: a short Markdown summary for pull requests, rendered from report.json."""

from __future__ import annotations

from typing import Any

from edgekd.report.drift import HEADER, NUMERIC, drift_rows, drift_summary
from edgekd.report.gates import with_status
from edgekd.report.schema import MODELS


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f} %"


def _ms(stats: dict[str, Any] | None, key: str) -> str:
    return "—" if stats is None else f"{stats[key]:.3f}"


def _drift_lines(drift: dict[str, Any]) -> list[str]:
    """The layers that add the most error between the fake-quant student and the runtime."""

    def line(cells: list[str]) -> str:
        return f"| {' | '.join(cells)} |"

    align = "|" + "|".join("---:" if n else "---" for n in NUMERIC) + "|"
    rows = [line(HEADER), align, *map(line, drift_rows(drift))]
    return ["", "### Drift (fake-quant vs ONNX Runtime)", "", *rows, "", drift_summary(drift)]


def gain_line(gain: dict[str, Any]) -> str:
    """The distillation gain over the control arm, its interval and how it was measured."""
    lo, hi = gain["ci_pt"]
    line = (
        f"Distillation gain over the same student trained on labels alone (`--baseline`): "
        f"**{gain['gain_pt']:+.2f} pt** ({100 * gain['confidence']:g} % CI [{lo:+.2f}, {hi:+.2f}]); "
        f"float students in PyTorch: distilled {_pct(gain['distilled_accuracy'])}, baseline "
        f"{_pct(gain['baseline_accuracy'])}; {gain['only_distilled_correct']:,} samples right only "
        f"when distilled, {gain['only_baseline_correct']:,} only in the baseline; paired bootstrap, "
        f"{gain['resamples']:,} resamples of {gain['samples']:,} validation samples, one seed."
    )
    if not gain["same_init"]:
        line += " ⚠️ The two arms did not start from the same weights."
    if gain["same_batches"] is False:
        line += " The arms trained on different batches (with --unlabeled the baseline has the labels only)."
    return line


HEADROOM = (
    "soft targets cannot pass on accuracy the teacher lacks: a stronger teacher, not another "
    "loss, is what could make distillation pay."
)


def headroom_note(report: dict[str, Any]) -> str | None:
    """With --baseline: a note when the student trained alone is as accurate as the teacher."""
    gain = report.get("distillation_gain")
    teacher = report["accuracy"].get("teacher")
    if gain is None or teacher is None or gain["baseline_accuracy"] < teacher:
        return None
    return (
        f"The student trained alone is as accurate as the teacher on the validation split "
        f"({_pct(gain['baseline_accuracy'])} vs {_pct(teacher)}): {HEADROOM}"
    )


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
    if "weight_bits" in q:
        w = q["weight_bits"]
        lo, hi = w["range"]
        lines.append(f"Weights: int8 per channel in [{lo}, {hi}] ({w['bits']} bits): {w['why']}.")

    keep = q.get("keep_float", {})
    if keep.get("layers"):
        lines.append(f"Kept in float ({keep['mode']}): {', '.join(keep['layers'])}.")
    if q.get("unquantizable"):
        lines.append(f"Not quantizable by this scheme: {', '.join(q['unquantizable'])}.")
    speed = keep.get("speed")
    if speed and speed["measured"]:
        mixes = "; ".join(
            f"{m['name']} {m['p90_ms']:.3f} ms ({m['vs_fp32']:.2f}×, {len(m['keep_float'])} "
            "kept float"
            + (f", {len(m['runtime_int8'])} of them INT8 in the runtime all the same"
               if m.get("runtime_int8") else "")
            + ")"
            for m in speed["mixes"]
        )  # fmt: skip
        lines.append(
            f"Mixed precision, timed whole in {speed['rounds']} interleaved rounds "
            f"({speed['where']}), "
            f"p{speed['percentile']}: fp32 {speed['fp32_p90_ms']:.3f} ms; {mixes}. "
            f"Shipped: {speed['chosen']}."
        )
        if "why_not_faster" in speed:
            lines.append(f"INT8 does not pay here: {speed['why_not_faster']}.")
    elif speed:
        lines.append(f"Mixed precision by accuracy only: {speed['why']}.")
    ranking = q.get("sensitivity", {}).get("layers", [])[:3]
    if ranking:
        worst = ", ".join(
            f"{r['layer']} (KL {r['kl']:.2e}, {_pct(r['accuracy'])})" for r in ranking
        )
        lines.append(f"Most sensitive layers, each quantized alone: {worst}.")
    return lines


def _roofline_lines(report: dict[str, Any]) -> list[str]:
    """The deployed student's roofline estimate, and measured / estimate where measured on the
    target."""
    est = report["estimate"]
    name = "student_int8" if "student_int8" in report["latency_ms"] else "student_fp32"
    roof = est.get("roofline", {}).get(name)
    why = est.get("roofline_unavailable", {}).get(name)
    if not roof:
        return [f"Roofline estimate for {name}: unavailable ({why})."] if why else []
    line = (
        f"Roofline estimate for {name} on `{report['target']['name']}` (datasheet peak, "
        f"{roof['precision']}, {roof['bound']}-bound): {roof['latency_ms']:.4f} ms"
    )
    if roof.get("overhead_ms"):  # reports written before the overhead term lack it
        line += (
            f"; with the target's overheads ({roof['layers']} layers, {roof['overhead_ms']:.4f} ms)"
            f" the estimate is {roof['estimate_ms']:.4f} ms"
        )
    ratio = est.get("measured_over_roofline", {}).get(name)
    over = est.get("measured_over_estimate", {}).get(name)
    if ratio:
        line += f"; measured p90 is {ratio:.1f}× the roofline" + (
            f", {over:.1f}× the estimate." if over else "."
        )
    return [line + ("" if ratio else ".")]


def _coverage_line(cov: dict[str, Any], what: str) -> str:
    """How much of a model's arithmetic runs in integer kernels, and the largest float layers."""
    if cov["int8_fraction"] is None:
        return f"INT8 coverage of {what} unknown: {cov.get('unavailable', 'no MAC counts')}."
    floats = sorted((r for r in cov["per_layer"] if not r["int8"]), key=lambda r: -(r["macs"] or 0))
    named = ", ".join(f"{r['module'] or r['layer']} ({r['kernel']})" for r in floats[:5])
    more = f" and {len(floats) - 5} more" if len(floats) > 5 else ""
    return (
        f"INT8 coverage of {what} on {cov['runtime']} ({cov['how']}): "
        f"{100 * cov['int8_fraction']:.1f} % of {cov['macs']:,} MACs in integer kernels "
        f"({cov['int8_layers']} of {cov['layers']} layers)"
        + (f"; in float: {named}{more}." if floats else ".")
    )


def _coverage_table(cov: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"### INT8 per layer ({cov['runtime']})",
        "",
        "| layer | exported as | runs as | MACs | INT8 |",
        "|---|---|---|---:|:---:|",
    ]
    for r in cov["per_layer"]:
        macs = "—" if r["macs"] is None else f"{r['macs']:,}"
        lines.append(
            f"| `{r['module'] or r['layer']}` | {r['op']} | {r['kernel'] or '—'} | {macs} | "
            f"{'yes' if r['int8'] else 'no'} |"
        )
    return lines


def _engine_lines(report: dict[str, Any]) -> list[str]:
    """One line per TensorRT engine the device built: version, build time, INT8 coverage."""
    lines = []
    for name, engine in report.get("engines", {}).items():
        cov = engine["int8_coverage"]
        share = (
            f"{cov['int8_layers']} of {cov['compute_layers']} compute layers INT8 "
            f"({100 * cov['coverage']:.1f} %)"
            if cov["coverage"] is not None
            else "INT8 coverage unknown (no detailed layer information)"
        )
        lines.append(
            f"TensorRT engine for {name}, built on the device: TensorRT {engine['tensorrt']}, "
            f"{engine['build_seconds']:.1f} s, {share}."
        )
        if "mac_coverage" in engine:
            lines.append(_coverage_line(engine["mac_coverage"], f"the {name} engine"))
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
    lines += [f"- ❌ {g['name']}: {g['evidence']}" for g in with_status(gates, "failed")]
    lines += [
        f"- ⚠️ not checked: {g['name']}: {g['evidence']}" for g in with_status(gates, "skipped")
    ]
    lines += [f"- ⚠️ sizing: {w}" for w in report["student"]["sizing"].get("warnings", [])]
    if gates["passed"]:
        passed = ", ".join(g["name"] for g in with_status(gates, "passed"))
        lines.append(f"- ✅ gates passed: {passed}")
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
        environment_line(report.get("environment") or {}),
    ]
    if "distillation_gain" in report:
        lines.append(gain_line(report["distillation_gain"]))
        note = headroom_note(report)
        if note:
            lines.append(note)
    ratio = report.get("latency_ratio", {}).get("student_int8_vs_fp32")
    if ratio is not None:
        lines.append(f"INT8 / fp32 p90 latency: {ratio:.2f}×.")
    coverage = (report.get("export") or {}).get("int8_coverage")
    if coverage:
        lines.append(_coverage_line(coverage, "student_int8"))
    lines += _roofline_lines(report)
    lines += _engine_lines(report)
    details = []  # folded, so that a pull-request comment shows the verdict and the table
    if report.get("quantization"):
        details += _quantization_lines(report["quantization"])
    if coverage:
        details += _coverage_table(coverage)
    if "drift" in report:
        details += _drift_lines(report["drift"])
    if details:
        lines += [
            "",
            "<details><summary>Quantization details</summary>",
            *details,
            "",
            "</details>",
        ]
    return "\n".join(lines) + "\n"


def environment_line(env: dict[str, Any]) -> str:
    """One line of the machine that measured: where, CPU, GPU, runtimes, Jetson power mode."""
    parts = [env.get("cpu"), env.get("gpu")]
    parts += [f"{k} {env[k]}" for k in ("onnxruntime", "tensorrt") if env.get(k)]
    jetson = env.get("jetson") or {}
    parts += [jetson.get("board"), jetson.get("l4t"), jetson.get("power_mode")]
    return (
        f"Measured on: {env.get('where', 'local')}: " + ", ".join(str(p) for p in parts if p) + "."
    )
