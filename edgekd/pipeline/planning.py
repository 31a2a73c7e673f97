"""``plan``: check every input, size the student and try every later step on the untrained models, before the run folder exists."""

from __future__ import annotations

import hashlib
from functools import partial
from typing import Any

import torch

from edgekd import resume
from edgekd.atomic import sha256
from edgekd.distill.cache import teacher_fingerprint
from edgekd.models.sizing import check_student, deploy_precision, size_student
from edgekd.models.students import StudentSpec
from edgekd.pipeline.context import Context, count_macs, count_params, teacher_specs
from edgekd.pipeline.stages import FIRST_STAGE, stage_started
from edgekd.preflight import preflight
from edgekd.progress import log
from edgekd.quant.prepare import (
    quantizable_layers,
)
from edgekd.quant.sensitivity import (
    check_keep_float,
    parse_keep_float,
)


def input_fingerprints(ctx: Context) -> dict[str, str | None]:
    """Content fingerprints of the run's input files, recorded in ``logs/inputs.json``: what
    ``--resume`` checks besides the config (:mod:`edgekd.resume`)."""
    cfg = ctx.cfg
    teachers = hashlib.sha256()
    for spec, weights in teacher_specs(cfg):
        teachers.update(teacher_fingerprint(spec, weights).encode())
    return {
        "teacher": teachers.hexdigest(),
        "data": ctx.data.fingerprint,
        "unlabeled": ctx.train_fingerprint if cfg.unlabeled else None,
        "target": sha256(ctx.target.path),
        "student": teacher_fingerprint(cfg.student, None) if cfg.student else None,
        "calib_manifest": sha256(cfg.calib_manifest) if cfg.calib_manifest else None,
    }


def _resume_changes(ctx: Context, inputs: dict[str, str | None]) -> list[str]:
    """What this ``--resume`` changes in the run: refused if a stage that has started depends on
    it, else one line per change."""
    run = ctx.run
    changed = resume.changes(run.config().to_dict(), ctx.cfg.to_dict(), run.inputs() or {}, inputs)
    return resume.check(changed, partial(stage_started, ctx), str(run.root), FIRST_STAGE)


def plan(ctx: Context, resume: bool = False) -> dict[str, Any]:
    """Load and check every input, size the student, try every later step on the untrained
    models (:func:`edgekd.preflight.preflight`), then create the run folder.

    Everything that can be wrong with the inputs fails here, before anything is written.
    """
    data, target = ctx.data, ctx.target
    if ctx.scheme is not None:
        ctx.calibration_inputs()  # a bad manifest or too few samples fail before the teacher loads
    teacher, _ = ctx.teacher, ctx.device
    inputs = input_fingerprints(ctx)
    resumed = resume and ctx.run.exists()
    applied = _resume_changes(ctx, inputs) if resumed else []
    teacher_params = count_params(teacher)
    teacher_macs = count_macs(teacher, ctx.input_shape)
    if ctx.cfg.student:
        sizing = check_student(
            ctx.new_student(), ctx.cfg.student, target, ctx.input_shape, teacher_params,
            min_compression=ctx.cfg.min_compression, teacher_macs=teacher_macs,
        )  # fmt: skip
        for warning in sizing["warnings"]:
            log(f"plan: warning: {warning}")
    else:
        decision = size_student(
            target, ctx.input_shape, data.num_classes, teacher_params,
            family=ctx.cfg.family, min_compression=ctx.cfg.min_compression,
            teacher_macs=teacher_macs,
        )  # fmt: skip
        sizing = decision.to_dict()
    sizing["teacher_params"] = teacher_params
    sizing["teacher_macs"] = teacher_macs
    sizing["precision"] = deploy_precision(target)
    torch.manual_seed(ctx.cfg.seed)
    spec = (
        None if ctx.cfg.student else StudentSpec(sizing["family"], sizing["width"], sizing["depth"])
    )
    student = ctx.new_student(spec)
    fresh = not (resume and ctx.run.student_pt.exists())
    taps = ctx.distill_setup(student).layers if fresh else []  # losses, pairs, adapters fit
    qat_taps = taps if ctx.cfg.qat_epochs else []  # QAT hooks them again in the fake-quant model
    checked = preflight(
        teacher, student, data.val.x[:2], target, ctx.scheme, ctx.cfg.calibrator, qat_taps
    )  # every later step on the untrained models: what would fail after training fails here
    sizing["preflight"] = checked
    log(f"plan: preflight: {len(checked['checks'])} checks in {checked['seconds']:.1f} s")
    if fresh and ctx.scheme is not None:
        check_keep_float(parse_keep_float(ctx.cfg.keep_float), quantizable_layers(student))
    ctx.run.start(ctx.cfg, resume, inputs)
    if resumed and (applied or ctx.run.inputs() != inputs):
        ctx.run.save_inputs(inputs)
        ctx.run.save_config(ctx.cfg)
        for line in applied:
            log(f"resume: {line}")
    ctx.run.save_record("sizing", sizing)
    log(f"student: {sizing['student']} — " + "; ".join(sizing["reasons"]))
    return sizing
