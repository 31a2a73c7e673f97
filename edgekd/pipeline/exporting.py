"""The ``export`` stage: teacher, float and INT8 (Q/DQ) ONNX, parity with the PyTorch models, the TensorRT lint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekd._version import __version__
from edgekd.atomic import write_bytes
from edgekd.device.fingerprint import x86_int8_dot
from edgekd.export.lint import lint_tensorrt
from edgekd.export.onnx_export import export_onnx
from edgekd.export.ort_format import to_ort_format
from edgekd.models.teacher import OnnxTeacher
from edgekd.pipeline.context import Context
from edgekd.progress import log
from edgekd.quant.coverage import ort_coverage
from edgekd.quant.prepare import (
    quantizable_layers,
)
from edgekd.run import RunDir
from edgekd.runners.ort_runner import OrtRunner
from edgekd.validate import agreement

PARITY_SAMPLES = 256  # validation samples, drawn at random (seeded), that export's parity uses
PARITY_AGREEMENT = 0.98  # below this top-1 agreement with the fake-quant student, export warns


def _parity(
    path: Path, model: nn.Module, x: torch.Tensor, optimize: bool = True
) -> dict[str, float]:
    """How closely ONNX Runtime reproduces the PyTorch model: optimised as deployed (its fused
    integer kernels), or with ``optimize`` False node by node, the arithmetic the Q/DQ graph
    means (what a TensorRT engine of it computes up to its own kernels)."""
    with torch.no_grad():
        ref = model(x).numpy()
    with OrtRunner(path, threads=0, optimize=optimize) as runner:
        out = runner.predict(x.numpy())
    return {"max_abs_diff": float(np.abs(out - ref).max()), "top1_agreement": agreement(out, ref)}


def _ort_format_parity(run: RunDir, x: torch.Tensor) -> dict[str, float]:
    """The .ort file loaded back: how closely it reproduces the .onnx it was made from."""
    with (
        OrtRunner(run.student_int8_onnx, threads=0) as a,
        OrtRunner(run.student_int8_ort, threads=0) as b,
    ):
        ref, out = a.predict(x.numpy()), b.predict(x.numpy())
    return {"max_abs_diff": float(np.abs(out - ref).max()), "top1_agreement": agreement(out, ref)}


def export(ctx: Context) -> None:
    """teacher.onnx, student_fp32.onnx, student_int8.onnx with Q/DQ (INT8 targets), .ort (mobile)."""
    run, data = ctx.run, ctx.data
    sample = data.val.x[:1]
    meta = {
        "edgekd_version": __version__,
        "mean": ",".join(f"{m:g}" for m in data.mean),
        "std": ",".join(f"{s:g}" for s in data.std),
        "classes": ",".join(data.classes),
        "target": ctx.target.name,
    }
    teacher = ctx.teacher
    if isinstance(teacher, OnnxTeacher):
        write_bytes(run.teacher_onnx, teacher.path.read_bytes())
    else:
        export_onnx(teacher, sample, run.teacher_onnx, metadata=meta)
    student = ctx.trained_student()
    export_onnx(student, sample, run.student_fp32_onnx, metadata=meta)
    g = torch.Generator().manual_seed(ctx.cfg.seed)  # class-sorted data: a sample of every class
    x = data.val.x[torch.randperm(len(data.val), generator=g)[:PARITY_SAMPLES].sort().values]
    record: dict[str, Any] = {
        "opset": 17,
        "student_fp32": _parity(run.student_fp32_onnx, student, x),
    }
    if ctx.scheme is not None:
        qmodel = ctx.qat_student()
        meta["quant_scheme"] = ctx.scheme.name
        kept = (run.record("quantize") or {}).get("keep_float", {}).get("layers", [])
        if kept:
            meta["kept_float"] = ",".join(kept)
        proto = export_onnx(qmodel, sample, run.student_int8_onnx, scheme=ctx.scheme, metadata=meta)
        record["student_int8"] = _parity(run.student_int8_onnx, qmodel, x)
        record["student_int8_unfused"] = _parity(run.student_int8_onnx, qmodel, x, optimize=False)
        if ctx.target.runtime == "onnxruntime":
            record["int8_coverage"] = ort_coverage(
                run.student_int8_onnx, ctx.target.latency.threads,
                modules=quantizable_layers(student),
            )  # fmt: skip
            cov = record["int8_coverage"]
            if ctx.target.family != "host":
                cov["how"] += f"; on this host's CPU, not on {ctx.target.name}"
            if cov["int8_fraction"] is not None:
                log(f"export: {100 * cov['int8_fraction']:.1f} % of the MACs run in integer "
                    f"kernels on {cov['runtime']} ({cov['int8_layers']} of {cov['layers']} "
                    "layers)")  # fmt: skip
        if ctx.target.family == "mobile":
            to_ort_format(run.student_int8_onnx, run.student_int8_ort)
            record["student_int8_ort"] = _ort_format_parity(run, x)
        if ctx.scheme.name == "tensorrt":
            violations = lint_tensorrt(proto)
            record["tensorrt_lint"] = [str(v) for v in violations]
            for v in violations:
                log(f"export: TensorRT Q/DQ lint: {v}")
        # the deployed kernels where the target runs ONNX Runtime; elsewhere what the graph means
        deployed = ctx.target.runtime == "onnxruntime"
        parity = record["student_int8" if deployed else "student_int8_unfused"]
        how = "as deployed" if deployed else "graph optimizations off"
        log(
            f"export: INT8 ONNX Runtime ({how}) vs PyTorch fake-quant max |diff| "
            f"{parity['max_abs_diff']:.2e} on {len(x)} samples"
        )
        if parity["top1_agreement"] < PARITY_AGREEMENT:
            why = ""
            if x86_int8_dot() == "none" and ctx.scheme.weight_qmax > 63:
                why = " (this x86-64 CPU has no VNNI: u8s8 saturation; --weight-bits 7 avoids it)"
            log(f"export: warning: ONNX Runtime picks the fake-quant student's class on only "
                f"{100 * parity['top1_agreement']:.1f} % of samples: its integer kernels do not "
                f"compute exactly what QAT simulated{why}; `edgekd diff RUN` finds the layers "
                "that diverge most")  # fmt: skip
    run.save_record("export", record)
