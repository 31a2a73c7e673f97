"""What runs the stage table: ``compress`` (every stage, resumable), one stage on a run folder, ``--nproc`` processes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch.distributed as dist

from edgekd.atomic import write_json
from edgekd.config import CompressConfig
from edgekd.distill.distributed import backend, init_from_env, spawn
from edgekd.distill.trainer import (
    is_main,
)
from edgekd.pipeline.context import Context
from edgekd.pipeline.planning import plan
from edgekd.pipeline.stages import STAGES, TRAINING, stage_done
from edgekd.progress import log
from edgekd.run import RunDir
from edgekd.validation import check_out


def _stage_worker(stage: str, root: str) -> None:
    """One training process of ``--nproc N`` (module level: spawned processes import it)."""
    run = RunDir(root)
    STAGES[stage].run(Context(run.config(), run))


def run_in(ctx: Context, stage: str, **options: Any) -> dict[str, Any] | None:
    """Run ``stage`` (with ``options``, e.g. validate's ``remote``); training stages in ``--nproc``
    processes when asked (and not under torchrun)."""
    if stage in TRAINING and ctx.cfg.nproc > 1 and not dist.is_initialized():
        if stage == "distill" or ctx.scheme is not None:
            # fill the teacher cache once, here, rather than in every process at the same time
            ctx.distill_setup(ctx.new_student(), saved=ctx.run.record("distill")).teacher(ctx)
            log(f"{stage}: {ctx.cfg.nproc} processes ({backend()})")
            spawn(ctx.cfg.nproc, _stage_worker, stage, str(ctx.run.root))
        return None
    return STAGES[stage].run(ctx, **options)


def compress(cfg: CompressConfig, out: str | Path, resume: bool = False) -> dict[str, Any] | None:
    """Run every stage into ``out``; with ``resume``, skip the stages already done there.

    Under torchrun every process trains; rank 0 alone plans, exports and validates (the other
    ranks return None).
    """
    distributed = init_from_env()
    if is_main():
        check_out(out, resume)  # a bad --out fails in one line before any input is loaded
    ctx = Context(cfg.resolved(), RunDir(out))
    t0 = time.perf_counter()
    if is_main():
        plan(ctx, resume)
    if distributed:
        dist.barrier()  # the run folder and the sizing record exist from here on
    result = None
    for name in STAGES:
        if not is_main() and name not in TRAINING:
            break
        if resume and stage_done(ctx, name):
            log(f"{name}: already done in {ctx.run.root}, skipped (--resume)")
            ctx.run.checkpoint(name).unlink(missing_ok=True)  # if killed as the stage ended
            continue
        log(f"== {name}")
        result = run_in(ctx, name)
        if distributed:
            dist.barrier()
    if not is_main():
        return None
    result["wall_seconds"] = time.perf_counter() - t0
    write_json(ctx.run.report_json, result)
    ctx.run.write_manifest()
    return result


def run_stage(
    stage: str, out: str | Path, changes: dict[str, Any] | None = None, **options: Any
) -> dict[str, Any] | None:
    """Run one stage on an existing run folder, with the config saved there.

    ``changes`` (config fields, e.g. ``{"qat_epochs": 0, "calibrator": "entropy"}``: PTQ with the
    entropy calibrator) are checked, then saved into the run's config before the stage runs, so
    that later stages, the manifest and the report see what was done. ``options`` go to the
    stage (validate's ``remote``).
    """
    run = RunDir(out)
    ctx = Context(run.config(), run)
    if changes:
        ctx = _changed(ctx, stage, changes)
    result = run_in(ctx, stage, **options)
    run.write_manifest()
    return result


def _changed(ctx: Context, stage: str, changes: dict[str, Any]) -> Context:
    """``ctx`` with ``changes`` to its config, saved once the stage's inputs are checked."""
    run = ctx.run
    cfg = CompressConfig.from_dict({**ctx.cfg.to_dict(), **changes}, "changes").resolved()
    new = Context(cfg, run)
    if stage == "quantize" and new.scheme is not None:
        run.need(run.student_pt)
        new.calibration_inputs()
    run.save_config(cfg)
    said = ", ".join(f"{k}={v!r}" for k, v in changes.items())
    log(f"{stage}: run config changed ({said}); later stages follow it")
    return new


def open_run(cfg: CompressConfig, out: str | Path, resume: bool = False) -> Context:
    """Check the inputs and create the run folder (the ``distill`` command's first step)."""
    check_out(out, resume)
    ctx = Context(cfg.resolved(), RunDir(out))
    plan(ctx, resume)
    return ctx
