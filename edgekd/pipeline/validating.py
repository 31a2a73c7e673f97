"""The ``validate`` stage: accuracy and latency of teacher, float and INT8 student on the target, the gates, the report."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

from edgekd import faults
from edgekd.errors import BadInput
from edgekd.pipeline.context import Context, count_params
from edgekd.report.build import build_report, deployed_model
from edgekd.report.files import write_reports
from edgekd.report.gates import kd_gain_evidence, lint_evidence
from edgekd.runners.latency import environment
from edgekd.runners.remote import SshSession, SshTarget
from edgekd.validate import accuracy, gate, run_models


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
    deployed = deployed_model(models)
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
    report = build_report(
        run,
        cfg=cfg,
        target=target,
        data=data,
        input_shape=ctx.input_shape,
        student_params=count_params(ctx.trained_student()),
        models=models,
        results=results,
        accuracy=acc,
        gates=gates,
        environment=env,
        control=control,
    )
    write_reports(run, report)
    return report
