"""The stage table: each stage of ``compress`` once, with what runs it and the run-folder files it
reads and writes; what the run folder says of each stage (done, started) follows from it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekd.pipeline.context import Context
from edgekd.pipeline.exporting import export
from edgekd.pipeline.training import distill, quantize
from edgekd.pipeline.validating import validate

When = Callable[[Context], bool]


def _int8(ctx: Context) -> bool:
    return ctx.scheme is not None


def _baseline(ctx: Context) -> bool:
    return ctx.cfg.baseline


def _mobile_int8(ctx: Context) -> bool:
    return _int8(ctx) and ctx.target.family == "mobile"


@dataclass(frozen=True)
class Stage:
    """One stage: ``run(ctx, **options)`` and its files, relative to the run folder.

    ``outputs`` are written by every run of the stage, its record (``logs/NAME.json``) last;
    ``optional`` ones only where their condition holds. A stage whose ``runs`` is false writes
    nothing and counts as done. ``settings`` are the config fields (and input files) it is the
    first to use: a resumed run may change them until the stage has started. A ``remeasured``
    stage runs again on every resume: it is never done, nor started.
    """

    name: str
    run: Callable[..., dict[str, Any] | None]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    optional: dict[str, When] = field(default_factory=dict)
    runs: When | None = None
    settings: tuple[str, ...] = ()
    remeasured: bool = False

    def writes(self, ctx: Context) -> list[Path]:
        """The files this stage writes in ``ctx``'s run folder."""
        if self.runs is not None and not self.runs(ctx):
            return []
        names = [*self.outputs, *(name for name, when in self.optional.items() if when(ctx))]
        return [ctx.run.root / name for name in names]


PLANNED = ("logs/inputs.json", "config.toml", "config.json", "logs/sizing.json")  # by plan

STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage(
            "distill", distill,
            inputs=("config.json", "logs/sizing.json"),
            outputs=("student.pt", "logs/objective.pt", "logs/distill.json"),
            optional={"student_baseline.pt": _baseline, "logs/baseline.json": _baseline},
        ),
        Stage(
            "quantize", quantize,
            inputs=("config.json", "logs/sizing.json", "student.pt", "logs/objective.pt",
                    "logs/distill.json"),
            outputs=("student_qat.pt", "logs/quantize.json"),
            runs=_int8,
            settings=("qat_epochs", "qat_lr", "calib_samples", "calib_manifest",
                      "calib_manifest file", "calibrator", "keep_float", "sensitivity",
                      "weight_bits"),
        ),
        Stage(
            "export", export,
            inputs=("config.json", "logs/sizing.json", "student.pt", "student_qat.pt",
                    "logs/quantize.json"),
            outputs=("teacher.onnx", "student_fp32.onnx", "logs/export.json"),
            optional={"student_int8.onnx": _int8, "student_int8.ort": _mobile_int8},
        ),
        Stage(
            "validate", validate,
            inputs=("config.json", "logs/sizing.json", "logs/distill.json", "logs/quantize.json",
                    "logs/baseline.json", "teacher.onnx", "student_fp32.onnx",
                    "student_int8.onnx", "logs/export.json", "logs/drift.json"),
            outputs=("report.json", "report.md", "report.html"),  # and engines/ where built
            settings=("max_accuracy_drop", "int8_must_pay", "min_kd_gain"),
            remeasured=True,  # latency is a property of the moment
        ),
    )
}  # fmt: skip
TRAINING = ("distill", "quantize")
# What a resumed run may change (edgekd.resume): each stage's settings, with the first stage that
# uses it; None: no output depends on it (where the teacher cache lives). Anything else shapes
# the plan (sizing) or training, and is refused.
FIRST_STAGE: dict[str, str | None] = {
    "cache_dir": None,
    **{name: stage.name for stage in STAGES.values() for name in stage.settings},
}


def stage_done(ctx: Context, name: str) -> bool:
    """Whether stage ``name`` finished: every file it writes in this run is there."""
    stage = STAGES[name]
    return not stage.remeasured and all(p.exists() for p in stage.writes(ctx))


def stage_started(ctx: Context, name: str) -> bool:
    """Whether stage ``name`` has written anything into the run folder: a checkpoint or an
    output."""
    stage = STAGES[name]
    if stage.remeasured:
        return False
    return ctx.run.checkpoint(name).exists() or any(p.exists() for p in stage.writes(ctx))
