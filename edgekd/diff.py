"""``edgekd diff``: drift triage of a run folder's INT8 model (:mod:`edgekd.quant.drift`
computes it; this module finds the run's models and data and saves ``logs/drift.json``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekd.device.errors import Missing
from edgekd.device.ort import choose_providers
from edgekd.errors import BadInput
from edgekd.export.lint import load_onnx
from edgekd.pipeline import Context
from edgekd.progress import log
from edgekd.quant.drift import layer_drift
from edgekd.run import RunDir
from edgekd.targets import Target


def _check_files(run: RunDir, target: Target) -> None:
    """BadInput naming the missing file and the command that makes it."""
    root = run.root
    if target.quant_scheme == "none":
        raise BadInput(
            f"{run.student_int8_onnx} is missing: target {target.name} runs {target.precision} "
            "without an INT8 model, so there is no quantization drift to triage"
        )
    if not run.student_qat_pt.exists():
        raise BadInput(f"{run.student_qat_pt} is missing; run edgekd quantize {root} to make it")
    if not run.student_int8_onnx.exists():
        raise BadInput(f"{run.student_int8_onnx} is missing; run edgekd export {root} to make it")


def diff_run(run_dir: str | Path, samples: int = 256, top: int = 5) -> dict[str, Any]:
    """Drift of a run folder's INT8 ONNX model (ONNX Runtime, as deployed) from its fake-quant
    student on the first ``samples`` validation samples; saved as ``logs/drift.json``."""
    if samples < 1 or top < 1:
        raise BadInput(f"--samples and --top must be 1 or more (got {samples} and {top})")
    run = RunDir(run_dir)
    ctx = Context(run.config(), run)
    target = ctx.target
    _check_files(run, target)
    model = load_onnx(run.student_int8_onnx)
    student = ctx.qat_student()
    x = ctx.data.val.x[:samples]
    try:
        providers = choose_providers(target.execution_providers)
    except Missing as e:
        raise BadInput(f"target {target.name}: {e}") from None
    log(f"diff: {run.student_int8_onnx.name} in ONNX Runtime vs the fake-quant student")
    result = layer_drift(student, model, x, top=top, providers=providers)
    record = {"scheme": target.quant_scheme, **result, "artifacts": run.int8_fingerprints()}
    run.save_record("drift", record)
    run.write_manifest()
    return record
