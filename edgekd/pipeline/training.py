"""The training stages: ``distill`` (with the ``--baseline`` control arm) and ``quantize`` (calibration, sensitivity, QAT)."""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from edgekd.atomic import write_torch
from edgekd.config import CompressConfig
from edgekd.distill.augment import Augmentation, make_augment
from edgekd.distill.control import BatchFingerprint, no_teacher, state_sha256
from edgekd.distill.losses import make_objective
from edgekd.distill.teachers import LiveTeacher
from edgekd.distill.trainer import (
    TrainConfig,
    amp_enabled,
    fit,
    is_main,
    predict,
    world_size,
)
from edgekd.models.teacher import load_weights
from edgekd.pipeline.context import Context, DistillSetup
from edgekd.progress import log
from edgekd.quant.calibrators import get_calibrator
from edgekd.quant.mixed import speed_plan
from edgekd.quant.prepare import (
    calibrate,
    freeze,
    placement_summary,
    prepare_qat,
    quantizable_layers,
    unquantizable_layers,
)
from edgekd.quant.sensitivity import (
    AUTO_TOLERANCE_PT,
    Probe,
    choose_keep_float,
    layer_sensitivity,
    parse_keep_float,
    score,
)
from edgekd.quant.weight_bits import default_weight_bits, weight_qmax
from edgekd.stats import accuracy_gain

SENSITIVITY_SAMPLES = 2000  # training samples each layer's quantization is scored on


def _epoch_config(cfg: CompressConfig, qat: bool) -> TrainConfig:
    if qat:
        return TrainConfig(
            epochs=cfg.qat_epochs, lr=cfg.effective_qat_lr, batch_size=cfg.batch_size,
            warmup_epochs=0.0, seed=cfg.seed + 1, amp=False, optimizer=cfg.optimizer,
        )  # fmt: skip
    return TrainConfig(
        epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, seed=cfg.seed,
        optimizer=cfg.optimizer,
    )  # fmt: skip


def _augment(cfg: CompressConfig) -> Augmentation | None:
    return make_augment(cfg.augment, cfg.mix_alpha)


def _train(
    ctx: Context,
    student: nn.Module,
    setup: DistillSetup,
    qat: bool,
    batches: BatchFingerprint | None = None,
) -> list[dict]:
    stage = "quantize" if qat else "distill"
    teacher = setup.teacher(ctx)
    try:
        return fit(
            student, ctx.train_set, teacher, setup.objective, _epoch_config(ctx.cfg, qat),
            device=ctx.device, val=ctx.data.val, checkpoint=ctx.run.checkpoint(stage),
            label="qat" if qat else "distill", layers=setup.layers, embedding=setup.embedding,
            augment=_augment(ctx.cfg), batches=batches,
        )  # fmt: skip
    finally:
        if isinstance(teacher, LiveTeacher):  # its taps off, the teacher back as it came
            teacher.close()


def _baseline_arm(ctx: Context, student: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
    """The control arm (--baseline): a copy of the untrained ``student`` trained on labels alone
    (loss ce) with the same schedule, seed, data order and augmentation (mixed batches too, its
    CE on their mixed labels) → student_baseline.pt, which --resume reuses. Its random draws are
    forked off, so the distilled arm's are those of a run without --baseline."""
    run, cfg = ctx.run, ctx.cfg
    if run.student_baseline_pt.exists():
        log(f"baseline: {run.student_baseline_pt} already trained, reused (--resume)")
        baseline = ctx.new_student()
        load_weights(baseline, run.student_baseline_pt)
        return baseline, run.record("baseline")
    device = ctx.device
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed)
        baseline = ctx.new_student()
        baseline.load_state_dict(student.state_dict())
        log("baseline: the same student on labels alone (loss ce), same schedule and batches")
        train = ctx.data.train  # labels alone: without a transfer set, the distilled arm's data
        batches = BatchFingerprint()
        arm = {"loss": "ce", "train_samples": len(train), "init_sha256": state_sha256(baseline)}
        history = fit(
            baseline, train, no_teacher, make_objective("ce"), _epoch_config(cfg, False),
            device=device, val=ctx.data.val, checkpoint=run.checkpoint("baseline"),
            label="baseline", augment=_augment(cfg), batches=batches,
        )  # fmt: skip
    record = {**arm, "batches": batches.to_dict(), "history": history}
    if is_main():
        write_torch(run.student_baseline_pt, baseline.state_dict())
        run.save_record("baseline", record)
        run.checkpoint("baseline").unlink(missing_ok=True)
    return baseline, record


def _kd_gain(
    ctx: Context, student: nn.Module, baseline: nn.Module, arms: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The distilled student's top-1 gain over the baseline on the validation split, with its
    paired bootstrap 95 % interval, and whether the two arms started and trained alike."""
    val, device = ctx.data.val, ctx.device
    hits = []
    for model in (student, baseline):
        hits.append((predict(model.to(device), val.x, device).argmax(1) == val.y).numpy())
        model.cpu()
    gain = accuracy_gain(*hits, names=("distilled", "baseline"), seed=ctx.cfg.seed)
    a, b = arms["distilled"]["batches"], arms["baseline"]["batches"]
    gain.update(
        method=f"paired bootstrap over the validation samples ({gain['resamples']} resamples, "
        f"seed {gain['seed']}, percentile interval); both float students in PyTorch on {device}",
        same_init=arms["distilled"]["init_sha256"] == arms["baseline"]["init_sha256"],
        # None: an arm resumed partway, so it hashed only its later batches (with --unlabeled
        # the arms train on different data, by design: False)
        same_batches=None
        if a["batches"] != b["batches"] and not ctx.cfg.unlabeled
        else a["sha256"] == b["sha256"],
        arms=arms,
    )
    lo, hi = gain["ci_pt"]
    log(f"distill: distillation gain {gain['gain_pt']:+.2f} pt (95 % CI [{lo:+.2f}, {hi:+.2f}]) "
        f"over the same student on labels alone: {100 * gain['distilled_accuracy']:.2f} % vs "
        f"{100 * gain['baseline_accuracy']:.2f} %")  # fmt: skip
    return gain


def distill(ctx: Context) -> None:
    """Train the float student against the teacher(s) → student.pt; with --baseline, first the
    same student on labels alone, and the distillation gain (logs/baseline.json)."""
    torch.manual_seed(ctx.cfg.seed)
    student = ctx.new_student()
    setup = ctx.distill_setup(student)
    if setup.record["pairs"]:
        pairs = ", ".join(f"{p['teacher']}={p['student']}" for p in setup.record["pairs"])
        log(f"distill: feature pairs ({setup.record['pairing']}): {pairs}")
    batches = None
    if ctx.cfg.baseline:
        baseline, control = _baseline_arm(ctx, student)
        init = state_sha256(student)
        batches = BatchFingerprint()
    history = _train(ctx, student, setup, qat=False, batches=batches)
    if is_main() and batches is not None:  # before student.pt: a resumed run finds it saved
        arm = {"loss": ctx.cfg.loss, "train_samples": len(ctx.train_set), "init_sha256": init,
               "batches": batches.to_dict()}  # fmt: skip
        baseline_arm = {k: v for k, v in control.items() if k not in ("history", "gain")}
        gain = _kd_gain(ctx, student, baseline, {"distilled": arm, "baseline": baseline_arm})
        ctx.run.save_record("baseline", {**control, "gain": gain})
    if is_main():
        write_torch(ctx.run.student_pt, student.state_dict())
        write_torch(ctx.run.objective_pt, setup.objective.state_dict())
        where = {"device": str(ctx.device), "processes": world_size(),
                 "amp": amp_enabled(_epoch_config(ctx.cfg, False), ctx.device)}  # fmt: skip
        ctx.run.save_record("distill", {**setup.record, **where, "history": history})
        ctx.run.checkpoint("distill").unlink(missing_ok=True)


def _probe(ctx: Context) -> Probe:
    """Calibration batches, and training samples with the teacher's logits to score layers on."""
    train = ctx.data.train
    g = torch.Generator().manual_seed(ctx.cfg.seed)
    idx = torch.randperm(len(train), generator=g)[:SENSITIVITY_SAMPLES]
    with torch.no_grad():
        teacher = ctx.teacher.eval()
        logits = torch.cat([teacher(b) for b in train.x[idx].split(256)])
    return Probe(ctx.calibration_inputs(), train.x[idx], train.y[idx], logits)


def _weight_bits(ctx: Context) -> dict[str, Any]:
    """The run's weight bits, and why: the target's default here, or the config's choice."""
    bits = ctx.cfg.weight_bits or 8
    default, why = default_weight_bits(ctx.target)
    if bits != default:
        why = f"set in the run config (this machine's default is {default}: {why})"
    return {"bits": bits, "range": [-weight_qmax(bits), weight_qmax(bits)], "why": why}


def _mixed_precision(
    ctx: Context, student: nn.Module, calibrator: str, probe: Probe, keep: dict[str, Any]
) -> dict[str, Any]:
    """``--keep-float auto``: the accuracy choice, plus the layers whose INT8 version is slower on
    the target's runtime where this machine runs it (measured once, by the first process)."""
    plan = speed_plan(student, ctx.scheme, calibrator, probe, keep["layers"], ctx.target) if (
        is_main()) else None  # fmt: skip
    if dist.is_initialized():
        box = [plan]
        dist.broadcast_object_list(box, src=0)
        plan = box[0]
    if not plan["measured"]:
        log(f"quantize: mixed precision by accuracy only: {plan['why']}")
        return {**keep, "speed": plan}
    mixes = ", ".join(f"{m['name']} {m['p90_ms']:.3f} ms" for m in plan["mixes"])
    log(f"quantize: mixed precision ({plan['where']}): p90 fp32 {plan['fp32_p90_ms']:.3f} ms, "
        f"{mixes}; {plan['chosen']} keeps {len(plan['layers'])} layer(s) in float")  # fmt: skip
    if "why_not_faster" in plan:
        log(f"quantize: {plan['why_not_faster']}")
    return {**keep, "layers": plan["layers"], "speed": plan}


def quantize(ctx: Context) -> None:
    """Fold BN, calibrate, fine-tune quantization-aware with the same losses → student_qat.pt."""
    cfg, scheme = ctx.cfg, ctx.scheme
    if scheme is None:
        log(f"quantize: skipped, {ctx.target.name} runs {ctx.target.precision} (no INT8)")
        return
    torch.manual_seed(cfg.seed)
    student = ctx.trained_student()
    calibrator = cfg.calibrator or scheme.calibrator
    unquantizable = unquantizable_layers(student)
    if unquantizable:
        log(f"quantize: the {scheme.name} scheme cannot quantize {', '.join(unquantizable)}: "
            "they stay in float")  # fmt: skip
    probe = _probe(ctx)
    if cfg.sensitivity:
        log(f"quantize: sensitivity: each of {len(quantizable_layers(student))} layers quantized "
            f"alone, scored on {len(probe.x)} samples (--no-sensitivity skips it)")  # fmt: skip
        ranking = layer_sensitivity(student, scheme, calibrator, probe)
        sensitivity = {
            "samples": len(probe.x),
            "method": "each layer quantized alone (the rest float), calibrated; KL(teacher || "
            "student) at T=1 and top-1 accuracy on training samples",
            "float_student": score(student, probe).to_dict(),
            "layers": ranking,
        }
    else:
        ranking, sensitivity = [], {"skipped": "--no-sensitivity"}
    keep = choose_keep_float(
        parse_keep_float(cfg.keep_float), student, scheme, calibrator, probe, ranking
    )
    if keep["layers"]:
        log(f"quantize: kept in float ({keep['mode']}): {', '.join(keep['layers'])}")
    if keep.get("reached") is False:
        log(f"quantize: --keep-float auto: no {len(ranking) // 2} layer(s) or fewer bring PTQ "
            f"within {AUTO_TOLERANCE_PT} pt of the float student; kept the best count")  # fmt: skip
    if keep["mode"] == "auto":
        keep = _mixed_precision(ctx, student, calibrator, probe, keep)
    qmodel = prepare_qat(student, scheme, calibrator, keep_float=keep["layers"])
    t0 = time.perf_counter()
    calibrate(qmodel, probe.calib.split(128))
    record: dict[str, Any] = {
        "scheme": scheme.name,
        "scheme_description": scheme.description,
        "weight_bits": _weight_bits(ctx),
        "ptq": cfg.qat_epochs == 0,  # calibration only, no quantization-aware epochs
        "calibration": {
            "samples": len(probe.calib),
            "method": get_calibrator(calibrator).label,
            "seconds": time.perf_counter() - t0,
        },
        "unquantizable": unquantizable,
        "placement": placement_summary(qmodel),
        "sensitivity": sensitivity,
        "keep_float": keep,
        "history": [],
    }
    if cfg.qat_epochs:
        setup = ctx.distill_setup(qmodel, saved=ctx.run.record("distill"))
        if ctx.run.objective_pt.exists():  # adapters continue from the float stage
            state = torch.load(ctx.run.objective_pt, weights_only=True)
            setup.objective.load_state_dict(state)
        record["history"] = _train(ctx, qmodel, setup, qat=True)
    if not is_main():
        return
    freeze(qmodel, biases=False)  # loaded again by Context.qat_student
    write_torch(ctx.run.student_qat_pt, qmodel.state_dict())
    ctx.run.save_record("quantize", record)
    ctx.run.checkpoint("quantize").unlink(missing_ok=True)
