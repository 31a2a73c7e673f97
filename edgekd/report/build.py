"""report.json built from a validation: the run's records, the measured models and the gates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import onnx

from edgekd._version import __version__
from edgekd.config import CompressConfig
from edgekd.data import Dataset
from edgekd.progress import log
from edgekd.quant.coverage import tensorrt_coverage
from edgekd.report.gates import Gates
from edgekd.report.schema import SCHEMA_VERSION
from edgekd.roofline import try_roofline
from edgekd.run import RunDir
from edgekd.runners.latency import PERCENTILES, LatencyStats
from edgekd.targets import Target
from edgekd.validate import ModelResult, agreement, per_class_accuracy


def deployed_model(models: dict[str, Path]) -> str:
    """The model a run ships: the INT8 student where there is one, else the float student."""
    return "student_int8" if "student_int8" in models else "student_fp32"


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


def _engines(
    run: RunDir, models: dict[str, Path], results: dict[str, ModelResult]
) -> dict[str, dict[str, Any]]:
    """The TensorRT engines the runtime built, each with its MAC coverage where the engine's
    layer listing was kept under ``engines/``."""
    engines = {name: r.engine for name, r in results.items() if r.engine}
    for name, engine in engines.items():
        layers = run.root / "engines" / engine["layers"]
        if layers.is_file():
            engine["mac_coverage"] = tensorrt_coverage(
                json.loads(layers.read_text()), onnx.load(str(models[name])),
                f"TensorRT {engine['tensorrt']}",
            )  # fmt: skip
    return engines


def build_report(
    run: RunDir,
    *,
    cfg: CompressConfig,
    target: Target,
    data: Dataset,
    input_shape: tuple[int, int, int],
    student_params: int,
    models: dict[str, Path],
    results: dict[str, ModelResult],
    accuracy: dict[str, float],
    gates: Gates,
    environment: dict[str, Any],
    control: dict[str, Any] | None,
) -> dict[str, Any]:
    """report.json of a run validated on ``target``: ``results`` and ``accuracy`` per model
    (``models``: the ONNX files measured), the ``gates`` decided on them, the ``environment``
    it was measured in and the control arm's record (``--baseline`` runs, else None); the rest
    from the run folder's stage records and its saved drift."""
    labels = data.val.y.numpy()
    latency = {name: r.latency for name, r in results.items()}
    deployed = deployed_model(models)
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
            "input_shape": list(input_shape),
            "mean": list(data.mean),
            "std": list(data.std),
            "fingerprint": data.fingerprint,
        },
        "teacher": {"spec": cfg.teacher, "weights": cfg.weights, "ensemble": cfg.ensemble},
        "student": {"label": sizing["student"], "deployed": deployed, "sizing": sizing},
        "accuracy": {
            name: accuracy.get(name) for name in ("teacher", "student_fp32", "student_int8")
        },
        "agreement": {
            name: agreement(results[name].logits, results["teacher"].logits)
            for name in results
            if name != "teacher"
        },
        "params": {"teacher": sizing["teacher_params"], "student": student_params},
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
        "environment": environment,
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
    engines = _engines(run, models, results)
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
    return report
