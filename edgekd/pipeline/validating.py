"""The ``validate`` stage: accuracy and latency of teacher, float and INT8 student on the target, the gates, the report."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import onnx

from edgekd import faults
from edgekd._version import __version__
from edgekd.errors import BadInput
from edgekd.pipeline.context import Context, count_params
from edgekd.progress import log
from edgekd.quant.coverage import tensorrt_coverage
from edgekd.report.files import write_reports
from edgekd.report.gates import kd_gain_evidence, lint_evidence
from edgekd.report.schema import SCHEMA_VERSION
from edgekd.roofline import try_roofline
from edgekd.runners.latency import PERCENTILES, LatencyStats, environment
from edgekd.runners.remote import SshSession, SshTarget
from edgekd.targets import Target
from edgekd.validate import accuracy, agreement, gate, per_class_accuracy, run_models


def _estimates(
    sizing: dict[str, Any],
    models: dict[str, Path],
    latency: dict[str, LatencyStats],
    target: Target,
) -> dict[str, Any]:
    """The sizing estimate, each artifact's roofline counted from its ONNX graph (with the
    target's overheads: ``estimate_ms``; or why it is unavailable), and measured p90 over each
    where the measurement was taken on the target itself."""
    roofs, unavailable = {}, {}
    for name, path in models.items():
        roofs[name], why = try_roofline(path, target)
        if why:
            unavailable[name] = why
            log(f"validate: roofline estimate for {name} unavailable: {why}")
    out: dict[str, Any] = {
        "latency_ms": sizing["estimate"]["latency_ms"],
        "method": "roofline from the target's datasheet figures"
        + (" + its per-inference and per-layer overheads" if target.overhead else ""),
        "roofline": roofs,
        "overhead_source": target.overhead.source if target.overhead else None,
    }
    if unavailable:
        out["roofline_unavailable"] = unavailable
    if all(s.on_target for s in latency.values()):
        out["measured_over_roofline"] = {
            name: latency[name].p90 / r["latency_ms"] for name, r in roofs.items() if r
        }
        out["measured_over_estimate"] = {
            name: latency[name].p90 / r["estimate_ms"] for name, r in roofs.items() if r
        }
    return out


def _control_record(ctx: Context) -> dict[str, Any] | None:
    """The control arm's record with the distillation gain (--baseline runs), else None."""
    if not ctx.cfg.baseline:
        return None
    path = ctx.run.logs / "baseline.json"
    ctx.run.need(path)
    record = ctx.run.record("baseline")
    if "gain" not in record:
        raise BadInput(f"{path} has no distillation gain; rerun the distill stage with --resume")
    return record


def validate(ctx: Context, remote: SshTarget | None = None) -> dict[str, Any]:
    """Accuracy, agreement and latency of the ONNX models; gates; report.json and report.md.

    ``remote``: measure on that device over SSH (the models and a runner are copied there).
    """
    run, data, target, cfg = ctx.run, ctx.data, ctx.target, ctx.cfg
    models = {"teacher": run.teacher_onnx, "student_fp32": run.student_fp32_onnx}
    if ctx.scheme is not None:
        models["student_int8"] = run.student_int8_onnx
    run.need(*models.values())
    labels = data.val.y.numpy()
    with SshSession(remote, [target.runtime]) if remote else nullcontext() as session:
        keep = run.root / "engines"  # engines built for a TensorRT target, here or on the device
        results = run_models(models, data.val, target, session, keep)
        env = session.fingerprint() if session else environment()
    faults.point("validate", "measured")
    acc = {name: accuracy(r.logits, labels) for name, r in results.items()}
    latency = {name: r.latency for name, r in results.items()}
    deployed = "student_int8" if "student_int8" in models else "student_fp32"
    gates = gate(target, acc, latency, deployed, cfg.max_accuracy_drop, cfg.int8_must_pay)
    lint = (run.record("export") or {}).get("tensorrt_lint")
    if lint is not None:
        gates.check(not lint, "tensorrt_qdq_lint", lint_evidence(lint))
    control = _control_record(ctx)
    if control is not None and cfg.min_kd_gain is not None:
        gain = control["gain"]
        gates.check(
            gain["gain_pt"] >= cfg.min_kd_gain, "kd_gain", kd_gain_evidence(gain, cfg.min_kd_gain)
        )
    sizing = run.record("sizing")
    report = {
        "schema_version": SCHEMA_VERSION,
        "edgekd": __version__,
        "target": {
            "name": target.name,
            "family": target.family,
            "runtime": target.runtime,
            "precision": target.precision,
            "quant_scheme": target.quant_scheme,
            "p90_budget_ms": target.budgets.p90_latency_ms,
            "max_params": target.budgets.max_params,
            "max_model_mb": target.budgets.max_model_mb,
            "max_memory_mb": target.budgets.max_memory_mb,
        },
        "data": {
            "source": data.source,
            "classes": data.num_classes,
            "train_samples": len(data.train),
            "val_samples": len(data.val),
            "input_shape": list(ctx.input_shape),
            "mean": list(data.mean),
            "std": list(data.std),
            "fingerprint": data.fingerprint,
        },
        "teacher": {"spec": cfg.teacher, "weights": cfg.weights, "ensemble": cfg.ensemble},
        "student": {"label": sizing["student"], "deployed": deployed, "sizing": sizing},
        "accuracy": {name: acc.get(name) for name in ("teacher", "student_fp32", "student_int8")},
        "agreement": {
            name: agreement(results[name].logits, results["teacher"].logits)
            for name in results
            if name != "teacher"
        },
        "params": {
            "teacher": sizing["teacher_params"],
            "student": count_params(ctx.trained_student()),
        },
        "model_mb": {name: path.stat().st_size / 1e6 for name, path in models.items()},
        "latency_ms": {name: s.to_dict() for name, s in latency.items()},
        "latency_ratio": {
            "student_fp32_vs_teacher": latency["student_fp32"].p90 / latency["teacher"].p90,
        },
        "estimate": _estimates(sizing, models, latency, target),
        "export": run.record("export"),
        "training": {
            "distill": (run.record("distill") or {}).get("history"),
            "qat": (run.record("quantize") or {}).get("history"),
        },
        "quantization": {k: v for k, v in (run.record("quantize") or {}).items() if k != "history"},
        "gates": gates.to_dict(),
        "environment": env,
    }
    if control is not None:
        report["distillation_gain"] = control["gain"]
        report["training"]["baseline"] = control["history"]
    if "student_int8" in latency:
        report["latency_ratio"]["student_int8_vs_fp32"] = (
            latency["student_int8"].p90 / latency["student_fp32"].p90
        )
    report["per_class_accuracy"] = {
        "classes": list(data.classes),
        **{
            name: per_class_accuracy(r.logits, labels, data.num_classes)
            for name, r in results.items()
        },
    }
    engines = {name: r.engine for name, r in results.items() if r.engine}
    for name, engine in engines.items():
        layers = run.root / "engines" / engine["layers"]
        if layers.is_file():
            engine["mac_coverage"] = tensorrt_coverage(
                json.loads(layers.read_text()), onnx.load(str(models[name])),
                f"TensorRT {engine['tensorrt']}",
            )  # fmt: skip
    if engines:
        report["engines"] = engines
    report["latency_quantiles"] = {
        "percentiles": list(PERCENTILES),
        "ms": {
            name: [round(q, 5) for q in s.quantiles] for name, s in latency.items() if s.quantiles
        },
    }
    report["config"] = cfg.to_dict()
    drift = run.saved_drift()  # from `edgekd diff`, when it describes the current INT8 model
    if drift is not None:
        report["drift"] = drift
    write_reports(run, report)
    return report
