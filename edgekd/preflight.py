"""Preflight: everything that can fail after training, tried on the untrained models first.

``plan`` runs :func:`preflight` before the first epoch (and before the run folder exists): the fx
trace and fake-quant preparation of the student for the target's scheme, calibration on a couple
of samples, the ONNX export of the teacher and of the float and fake-quant student, an ONNX Runtime
session on each export, the TensorRT Q/DQ lint, the ORT format conversion for mobile targets, the
feature taps in the fake-quant model, and the roofline. A failure is bad input, one line
that names the module at fault (the deepest submodule that fails the same step on its own input)
and what to do. Lint violations and an unavailable roofline are warnings: the model still builds
and runs, and validate's gate judges the trained one.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from edgekd.distill.features import resolve
from edgekd.errors import BadInput, first_line
from edgekd.export.lint import lint_tensorrt
from edgekd.export.onnx_export import OPSET, export_onnx, to_onnx
from edgekd.export.ort_format import to_ort_format
from edgekd.models.teacher import OnnxTeacher
from edgekd.progress import log
from edgekd.quant.prepare import (
    calibrate,
    freeze,
    prepare_qat,
    quantizable_layers,
    trace,
    unquantizable_layers,
)
from edgekd.quant.scheme import QuantScheme
from edgekd.roofline import try_roofline
from edgekd.runners.ort_runner import OrtRunner
from edgekd.targets import Target

NO_INT8 = "or a target without INT8 (a float precision)"
_LINT_NAMED = 3  # violations named in the warning; the record keeps them all


def _error(e: BaseException) -> str:
    """``Type: first line`` of the exception behind ``e`` (a BadInput's suppressed cause)."""
    cause = e.__context__ if isinstance(e, BadInput) and e.__context__ else e
    return f"{type(cause).__name__}: {first_line(cause)}"


def _works(step: Callable[[], object]) -> bool:
    try:
        with _native_stderr_muted():
            step()
    except Exception:  # noqa: BLE001 - any failure of the step is what is looked for
        return False
    return True


@contextmanager
def _native_stderr_muted() -> Iterator[None]:
    """Silence file descriptor 2 (the TorchScript exporter dumps its whole IR graph there when an
    export fails), so that the failure stays one line."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@torch.no_grad()
def _module_inputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The tensor each submodule called with one tensor receives in a forward pass of ``x``."""
    seen: dict[str, torch.Tensor] = {}
    handles = []

    def hook(name: str) -> Callable:
        def record(_: nn.Module, args: tuple) -> None:
            if name not in seen and len(args) == 1 and isinstance(args[0], torch.Tensor):
                seen[name] = args[0]

        return record

    was_training = model.training
    try:
        for name, m in model.named_modules():
            if name:
                handles.append(m.register_forward_pre_hook(hook(name)))
        model.eval()(x)
    except Exception:  # noqa: BLE001 - a model without hooks (TorchScript) is not searched
        return {}
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return seen


def culprit(
    model: nn.Module, x: torch.Tensor, works: Callable[[nn.Module, torch.Tensor], bool]
) -> str:
    """The qualified name of the deepest submodule of ``model`` that fails ``works`` on the input
    it gets from ``x``; "" when no submodule fails alone (the fault is in ``model``'s own
    forward)."""
    inputs = _module_inputs(model, x)
    name = ""
    while True:
        prefix = f"{name}." if name else ""
        children = model.get_submodule(name).named_children()
        failing = next(
            (
                prefix + c
                for c, m in children
                if prefix + c in inputs and not works(m, inputs[prefix + c])
            ),
            None,
        )
        if failing is None:
            return name
        name = failing


def _where(model: nn.Module, role: str, name: str) -> str:
    """``the student's module 'blocks.1' (Gate)``, or ``the student (Net)``."""
    if not name:
        return f"the {role} ({type(model).__name__})"
    return f"the {role}'s module {name!r} ({type(model.get_submodule(name)).__name__})"


def _user_line(e: BaseException) -> str:
    """`` at file.py:12`` for the last frame of ``e``'s traceback outside torch, or ""."""
    tb = e.__context__.__traceback__ if isinstance(e, BadInput) and e.__context__ else None
    torch_dir = str(Path(torch.__file__).parent)
    frames = [f for f in traceback.extract_tb(tb) if not f.filename.startswith(torch_dir)]
    return f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""


def _fake_quant(
    model: nn.Module, x: torch.Tensor, scheme: QuantScheme, calibrator: str | None
) -> nn.Module:
    """``model`` prepared for ``scheme``, calibrated on ``x``, frozen, run once in fake-quant."""
    qmodel = prepare_qat(model, scheme, calibrator)
    calibrate(qmodel, [x])
    freeze(qmodel)
    with torch.no_grad():
        qmodel.eval()(x)
    return qmodel


def _quantizes(scheme: QuantScheme, calibrator: str | None, export: bool) -> Callable:
    """``works`` for :func:`culprit`: fake-quant (and with ``export`` its ONNX export) of a
    submodule; one without Conv2d/Linear has nothing to quantize, so nothing to fail."""

    def step(m: nn.Module, x: torch.Tensor) -> None:
        qmodel = _fake_quant(nn.Sequential(m), x, scheme, calibrator)  # a layer is a call in it
        if export:
            with tempfile.TemporaryDirectory(prefix="edgekd-preflight-") as tmp:
                export_onnx(qmodel, x[:1], Path(tmp, "part.onnx"), scheme=scheme)

    def works(m: nn.Module, x: torch.Tensor) -> bool:
        if not any(isinstance(c, nn.Conv2d | nn.Linear) for c in m.modules()):
            return True
        return _works(lambda: step(m, x))

    return works


def _exports(m: nn.Module, x: torch.Tensor) -> bool:
    return _works(lambda: to_onnx(m, x[:1]))


class _Checks:
    """The checks run so far, each with its time, and the warnings they gave."""

    def __init__(self) -> None:
        self.done: list[dict[str, Any]] = []
        self.warnings: list[str] = []

    @contextmanager
    def check(self, what: str) -> Iterator[None]:
        t = time.perf_counter()
        yield
        self.done.append({"check": what, "seconds": round(time.perf_counter() - t, 4)})

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        log(f"plan: warning: {message}")


def _check_trace(student: nn.Module, x: torch.Tensor) -> None:
    try:
        trace(student)
    except BadInput as e:
        where = _where(
            student, "student", culprit(student, x, lambda m, _: _works(lambda: trace(m)))
        )
        raise BadInput(
            f"{where} cannot be traced by torch.fx, which INT8 quantization needs ({_error(e)})"
            f"{_user_line(e)}: make its forward free of Python control flow on tensor values, "
            f"or give another student (--student), {NO_INT8}"
        ) from None


def _check_quantize(
    student: nn.Module, x: torch.Tensor, scheme: QuantScheme, calibrator: str | None
) -> nn.Module:
    if not quantizable_layers(student):
        weighted = unquantizable_layers(student)
        has = f" (its layers with weights: {', '.join(weighted)})" if weighted else ""
        raise BadInput(
            f"the student has no layer the {scheme.name} scheme quantizes, nn.Conv2d or "
            f"nn.Linear{has}: give a student built from them (--student), {NO_INT8}"
        )
    try:
        return _fake_quant(student, x, scheme, calibrator)
    except BadInput:
        raise
    except Exception as e:  # noqa: BLE001 - fake-quant preparation and calibration raise many types
        error = _error(e)
    where = _where(student, "student", culprit(student, x, _quantizes(scheme, calibrator, False)))
    raise BadInput(
        f"{where} cannot be quantized for the {scheme.name} scheme ({error}): give another "
        f"student (--student), {NO_INT8}"
    )


def _export(model: nn.Module, role: str, x: torch.Tensor, path: Path) -> Path:
    try:
        with _native_stderr_muted():
            export_onnx(model, x[:1], path)
        return path
    except Exception as e:  # noqa: BLE001 - the exporter raises many types
        error = _error(e)
    if role == "teacher":
        todo = (
            "replace that op with one ONNX has, or export the teacher yourself (e.g. "
            "torch.onnx.export(..., dynamo=True)) and give the .onnx file as --teacher"
        )
    else:
        todo = "replace that op with one ONNX has, or give another student (--student)"
    where = _where(model, role, culprit(model, x, _exports))
    raise BadInput(f"{where} does not export to ONNX opset {OPSET} ({error}): {todo}")


def _export_quantized(
    student: nn.Module,
    qmodel: nn.Module,
    x: torch.Tensor,
    scheme: QuantScheme,
    calibrator: str | None,
    path: Path,
) -> onnx.ModelProto:
    try:
        with _native_stderr_muted():
            return export_onnx(qmodel, x[:1], path, scheme=scheme)
    except Exception as e:  # noqa: BLE001 - the exporter and the Q/DQ pass raise many types
        error = _error(e)
    where = _where(student, "student", culprit(student, x, _quantizes(scheme, calibrator, True)))
    raise BadInput(
        f"{where} does not export to ONNX once fake-quantized for the {scheme.name} scheme "
        f"({error}): give another student (--student), {NO_INT8}"
    )


def _check_session(name: str, path: Path, x: torch.Tensor, target: Target) -> None:
    try:
        with OrtRunner(path, target.execution_providers, threads=1) as runner:
            out = runner.predict(x.numpy())
    except Exception as e:  # noqa: BLE001 - ONNX Runtime raises several types
        raise BadInput(
            f"the {name} ONNX export does not run in ONNX Runtime ({_error(e)}): give another "
            f"{'teacher' if name == 'teacher' else 'student (--student)'}"
        ) from None
    if not np.isfinite(out).all():
        raise BadInput(f"the {name} ONNX export gives non-finite outputs in ONNX Runtime")


def _lint(proto: onnx.ModelProto, checks: _Checks) -> list[str]:
    violations = lint_tensorrt(proto)
    if violations:
        nodes = ", ".join(v.node for v in violations[:_LINT_NAMED])
        more = f" and {len(violations) - _LINT_NAMED} more" if len(violations) > _LINT_NAMED else ""
        checks.warn(
            f"the untrained student's tensorrt export breaks {len(violations)} TensorRT Q/DQ "
            f"rule(s) ({', '.join(sorted({v.rule for v in violations}))}) at {nodes}{more}: "
            "quantizer placement, not training, decides them, so the tensorrt_qdq_lint gate will "
            "fail after training; `edgekd lint` on the exported model lists them"
        )
    return [str(v) for v in violations]


def _check_taps(qmodel: nn.Module, taps: Sequence[str]) -> None:
    for name in taps:
        try:
            resolve(qmodel, name, "fake-quant student")
        except BadInput as e:
            raise BadInput(
                f"the student's module {name!r}, tapped for feature distillation, has no "
                f"counterpart in the fake-quant student that QAT trains ({e}): pair another "
                "student module (--pair), e.g. a layer or a block with layers in it"
            ) from None


def preflight(
    teacher: nn.Module,
    student: nn.Module,
    sample: torch.Tensor,
    target: Target,
    scheme: QuantScheme | None,
    calibrator: str | None = None,
    taps: Sequence[str] = (),
) -> dict[str, Any]:
    """Run every step that could fail after training on the untrained ``student`` (and the
    ``teacher``) with ``sample`` (a couple of inputs); BadInput at the first that fails.
    ``taps``: the student modules feature distillation hooks, which QAT finds again in the
    fake-quant model. Returns what was checked and how long each check took, warnings and the
    rooflines."""
    t0 = time.perf_counter()
    checks = _Checks()
    record: dict[str, Any] = {"samples": len(sample)}
    with tempfile.TemporaryDirectory(prefix="edgekd-preflight-") as tmp:
        models: dict[str, Path] = {}
        qmodel = None
        if scheme is not None:
            with checks.check("student: torch.fx trace"):
                _check_trace(student, sample)
            unquantizable = unquantizable_layers(student)
            if unquantizable:
                checks.warn(
                    f"the {scheme.name} scheme cannot quantize {', '.join(unquantizable)}: they "
                    "will stay in float"
                )
            with checks.check(
                f"student: fake-quant for {scheme.name}, calibrated on {len(sample)} samples"
            ):
                qmodel = _check_quantize(student, sample, scheme, calibrator)
        if isinstance(teacher, OnnxTeacher):
            models["teacher"] = teacher.path
        else:
            with checks.check("teacher: ONNX export"):
                models["teacher"] = _export(teacher, "teacher", sample, Path(tmp, "teacher.onnx"))
        with checks.check("student: ONNX export (float)"):
            models["student_fp32"] = _export(
                student, "student", sample, Path(tmp, "student_fp32.onnx")
            )
        if qmodel is not None and scheme is not None:
            path = Path(tmp, "student_int8.onnx")
            with checks.check(f"student: ONNX export (fake-quant, {scheme.name})"):
                proto = _export_quantized(student, qmodel, sample, scheme, calibrator, path)
            models["student_int8"] = path
            if scheme.name == "tensorrt":
                with checks.check("student: TensorRT Q/DQ lint"):
                    record["tensorrt_lint"] = _lint(proto, checks)
            if target.family == "mobile":
                with checks.check("student: ORT format conversion"):
                    to_ort_format(path, Path(tmp, "student_int8.ort"))
            if taps:
                with checks.check("student: feature taps on the fake-quant model"):
                    _check_taps(qmodel, taps)
        with checks.check(f"ONNX Runtime session and inference: {', '.join(models)}"):
            for name, path in models.items():
                _check_session(name, path, sample, target)
        with checks.check("roofline"):
            roofs, unavailable = {}, {}
            for name, path in models.items():
                roofs[name], why = try_roofline(path, target)
                if why:
                    unavailable[name] = why
            record["roofline"] = roofs
            if unavailable:
                record["roofline_unavailable"] = unavailable
        for name, why in unavailable.items():
            checks.warn(f"roofline estimate for {name} unavailable: {why}")
    return {
        **record,
        "checks": checks.done,
        "warnings": checks.warnings,
        "seconds": round(time.perf_counter() - t0, 4),
    }
