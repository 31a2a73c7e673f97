"""``compress``: plan → distill → quantize → export → validate, each stage resumable on its own."""

from __future__ import annotations

import hashlib
import json
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.distributed as dist
from torch import nn

from edgekd import faults, resume
from edgekd._version import __version__
from edgekd.atomic import sha256, write_bytes, write_json, write_torch
from edgekd.calibration import calibration_inputs
from edgekd.config import CompressConfig
from edgekd.data import Dataset, Split, load_dataset, load_unlabeled
from edgekd.device.fingerprint import x86_int8_dot
from edgekd.distill.augment import make_augment
from edgekd.distill.cache import cache_key, default_cache_dir, teacher_fingerprint, teacher_outputs
from edgekd.distill.control import BatchFingerprint, no_teacher, state_sha256
from edgekd.distill.distributed import backend, init_from_env, spawn
from edgekd.distill.ensemble import ensemble_logits, parse_teacher
from edgekd.distill.features import (
    Pair,
    auto_pairs,
    embedding_dims,
    feature_shapes,
    parse_pairs,
    resolve,
)
from edgekd.distill.losses import LOSSES, Objective, make_objective, parse_loss_spec
from edgekd.distill.teachers import CachedTeacher, LiveTeacher
from edgekd.distill.trainer import (
    TeacherSource,
    TrainConfig,
    amp_enabled,
    fit,
    is_main,
    predict,
    resolve_device,
    world_size,
)
from edgekd.errors import BadInput, first_line
from edgekd.export.lint import lint_tensorrt
from edgekd.export.onnx_export import export_onnx
from edgekd.export.ort_format import to_ort_format
from edgekd.models.profile import profile
from edgekd.models.sizing import check_student, deploy_precision, size_student
from edgekd.models.students import StudentSpec, build_student
from edgekd.models.teacher import OnnxTeacher, check_classes, load_model, load_weights
from edgekd.preflight import preflight
from edgekd.progress import log
from edgekd.quant.calibrators import get_calibrator
from edgekd.quant.coverage import ort_coverage, tensorrt_coverage
from edgekd.quant.mixed import speed_plan
from edgekd.quant.prepare import (
    calibrate,
    freeze,
    placement_summary,
    prepare_qat,
    quantizable_layers,
    unquantizable_layers,
)
from edgekd.quant.scheme import QuantScheme, get_scheme
from edgekd.quant.sensitivity import (
    AUTO_TOLERANCE_PT,
    Probe,
    check_keep_float,
    choose_keep_float,
    layer_sensitivity,
    parse_keep_float,
    score,
)
from edgekd.quant.weight_bits import default_weight_bits, weight_qmax
from edgekd.report import SCHEMA_VERSION
from edgekd.report_files import write_reports
from edgekd.roofline import load_cost, try_roofline
from edgekd.run import RunDir
from edgekd.runners.latency import PERCENTILES, LatencyStats, environment
from edgekd.runners.ort_runner import OrtRunner
from edgekd.runners.remote import SshSession, SshTarget
from edgekd.stats import accuracy_gain
from edgekd.targets import Target, load_target
from edgekd.validate import accuracy, agreement, gate, per_class_accuracy, run_models
from edgekd.validation import check_out

PARITY_SAMPLES = 256  # validation samples, drawn at random (seeded), that export's parity uses
PARITY_AGREEMENT = 0.98  # below this top-1 agreement with the fake-quant student, export warns
SENSITIVITY_SAMPLES = 2000  # training samples each layer's quantization is scored on


def teacher_specs(cfg: CompressConfig) -> list[tuple[str, str | None]]:
    """(spec, weights) of every teacher: ``--teacher``/``--weights``, then the ensemble's."""
    spec, weights = parse_teacher(cfg.teacher)
    first = (spec, weights or cfg.weights)
    return [first, *(parse_teacher(t) for t in cfg.ensemble)]


@dataclass
class DistillSetup:
    """What a training stage needs besides the student: the objective, taps and the teacher side."""

    objective: Objective
    layers: list[str]  # student taps
    teacher_layers: list[str]  # the teacher's, pair by pair
    embedding: bool
    record: dict[str, Any]

    def teacher(self, ctx: Context) -> TeacherSource:
        return ctx.teacher_source(self.teacher_layers, self.embedding)


def count_params(model: nn.Module) -> int:
    if isinstance(model, OnnxTeacher):
        import onnx

        return sum(int(np.prod(t.dims)) for t in onnx.load(str(model.path)).graph.initializer)
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_shape: tuple[int, int, int]) -> int | None:
    """Multiply-accumulates of one forward pass at batch 1; None where they cannot be counted
    (a TorchScript or torch.export teacher hides its layers from the hooks that count them)."""
    if isinstance(model, OnnxTeacher):
        try:
            return load_cost(model.path).macs
        except Exception:  # noqa: BLE001 - an uncountable graph only loses the MAC bound
            return None
    try:
        return profile(model, input_shape).macs or None
    except Exception:  # noqa: BLE001 - as above
        return None


@dataclass
class Context:
    """A run's resolved config and everything loaded from it, loaded lazily and once."""

    cfg: CompressConfig
    run: RunDir

    @cached_property
    def target(self) -> Target:
        return load_target(self.cfg.target)

    @cached_property
    def data(self) -> Dataset:
        c = self.cfg
        return load_dataset(
            c.data,
            input_size=tuple(c.input_size) if c.input_size else None,
            mean=c.mean,
            std=c.std,
            val_fraction=c.val_fraction,
            seed=c.seed,
        )

    @cached_property
    def teachers(self) -> list[tuple[str, str | None, nn.Module]]:
        """Every teacher as (spec, weights, model): the first, then the ensemble's others."""
        specs = teacher_specs(self.cfg)
        out = []
        for i, (spec, weights) in enumerate(specs):
            model = load_model(spec, weights)
            what = "the teacher" if len(specs) == 1 else f"teacher {i + 1} ({spec})"
            check_classes(model, self.data.val.x, self.data.num_classes, what)
            out.append((spec, weights, model))
        return out

    @property
    def teacher(self) -> nn.Module:
        """The first teacher: the reference that validation compares the student with."""
        return self.teachers[0][2]

    @cached_property
    def train_set(self) -> Split:
        """What the student trains on: labelled data, plus or instead of the unlabeled transfer set
        (label -1: the teachers alone label it)."""
        train = self.data.train
        if not self.cfg.unlabeled:
            return train
        x = load_unlabeled(self.cfg.unlabeled, self.data)
        y = torch.full((len(x),), -1, dtype=train.y.dtype)
        if self.cfg.unlabeled_only:
            return Split(x, y)
        return Split(torch.cat([train.x, x]), torch.cat([train.y, y]))

    @cached_property
    def train_fingerprint(self) -> str:
        if not self.cfg.unlabeled:
            return self.data.fingerprint
        h = hashlib.sha256(self.data.fingerprint.encode())
        h.update(str(self.cfg.unlabeled_only).encode())
        h.update(self.train_set.x.numpy().tobytes())
        return h.hexdigest()

    @cached_property
    def device(self) -> torch.device:
        try:
            device = resolve_device(self.cfg.device)
        except RuntimeError as e:
            raise BadInput(f"--device {self.cfg.device!r}: {first_line(e)}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise BadInput(f"--device {self.cfg.device!r}: CUDA is not available on this machine")
        return device

    @property
    def scheme(self) -> QuantScheme | None:
        """The target's scheme, its weights in the run's bits (runs from before weight_bits
        existed used 8)."""
        name = self.target.quant_scheme
        if name == "none":
            return None
        return replace(get_scheme(name), weight_qmax=weight_qmax(self.cfg.weight_bits or 8))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.data.channels, *self.data.size)

    def new_student(self, spec: StudentSpec | None = None) -> nn.Module:
        """A fresh float student: the user's factory, or ``spec`` (default: sizing's choice)."""
        if self.cfg.student:
            student = load_model(self.cfg.student, role="student")
            check_classes(student, self.data.val.x, self.data.num_classes, "the student")
            return student.train()
        if spec is None:
            sizing = self.run.record("sizing")
            spec = StudentSpec(sizing["family"], sizing["width"], sizing["depth"])
        return build_student(spec, self.data.channels, self.data.num_classes, max(self.data.size))

    def trained_student(self) -> nn.Module:
        self.run.need(self.run.student_pt)
        student = self.new_student()
        load_weights(student, self.run.student_pt)
        return student.eval()

    def qat_student(self) -> nn.Module:
        """The fake-quant student as saved by the quantize stage, scales frozen for export."""
        self.run.need(self.run.student_qat_pt)
        kept = (self.run.record("quantize") or {}).get("keep_float", {}).get("layers", [])
        qmodel = prepare_qat(self.trained_student(), self.scheme, keep_float=kept)
        load_weights(qmodel, self.run.student_qat_pt)
        freeze(qmodel)
        return qmodel.eval()

    def distill_setup(
        self, student: nn.Module, saved: dict[str, Any] | None = None
    ) -> DistillSetup:
        """The objective for ``student``, the layers it taps, and the teacher side to match.

        ``saved``: the distill stage's record, so that the QAT stage taps the same points.
        """
        cfg = self.cfg
        names = parse_loss_spec(cfg.loss)
        needs = frozenset().union(*(LOSSES[n].needs for n in names))
        sample = self.data.val.x[:2]
        teacher = self.teacher
        pairs: list[Pair] = []
        pairing = "none"
        if "features" in needs:
            if saved is not None:
                pairs = [Pair(p["teacher"], p["student"]) for p in saved["pairs"]]
                pairing = saved["pairing"]
            elif cfg.pairs:
                pairs, pairing = parse_pairs(cfg.pairs), "given"
            else:
                pairs, pairing = auto_pairs(teacher, student, sample), "auto"
                if not pairs:
                    raise BadInput(
                        f"loss {cfg.loss!r} needs feature pairs and none pair automatically by "
                        "spatial size; give --pair teacher.MODULE=student.MODULE"
                    )
            pairs = [
                Pair(resolve(teacher, p.teacher, "teacher"), resolve(student, p.student, "student"))
                for p in pairs
            ]
        elif cfg.pairs:
            log(f"distill: --pair ignored, loss {cfg.loss!r} uses no features")
        embedding = "embedding" in needs
        shapes = feature_shapes(teacher, student, pairs, sample) if pairs else []
        dims = embedding_dims(teacher, student, sample) if embedding else None
        weights = {"kd": cfg.alpha, **cfg.loss_weights}
        objective = make_objective(
            cfg.loss,
            temperature=cfg.temperature,
            weights={k: v for k, v in weights.items() if k in names},
            feature_shapes=shapes,
            embedding_dims=dims,
        )
        return DistillSetup(
            objective=objective,
            layers=[p.student for p in pairs],
            teacher_layers=[p.teacher for p in pairs],
            embedding=embedding,
            record={
                "loss": cfg.loss,
                "terms": names,
                "pairing": pairing,
                "pairs": [
                    {"teacher": p.teacher, "student": p.student, "teacher_shape": list(ts),
                     "student_shape": list(ss)}
                    for p, (ss, ts) in zip(pairs, shapes, strict=True)
                ],
                "teachers": [spec for spec, _, _ in self.teachers],
                "ensemble_weights": cfg.ensemble_weights,
                "train_samples": len(self.train_set),
                "unlabeled": cfg.unlabeled,
                "augment": cfg.augment,
            },
        )  # fmt: skip

    def teacher_source(self, layers: list[str], embedding: bool) -> TeacherSource:
        """Cached teacher outputs (disk, memory-mapped) or, with random augmentation, live ones."""
        cfg, teachers = self.cfg, self.teachers
        models = [m for _, _, m in teachers]
        if cfg.augment != "none":
            log("teacher: inputs are randomly augmented, so the teacher runs live (no cache)")
            return LiveTeacher(
                models, cfg.ensemble_weights, cfg.temperature, self.device, layers, embedding
            )
        cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
        outputs = []
        for i, (spec, weights, model) in enumerate(teachers):
            taps = (layers, embedding) if i == 0 else ([], False)
            key = cache_key(teacher_fingerprint(spec, weights), self.train_fingerprint, *taps)
            device = torch.device("cpu") if isinstance(model, OnnxTeacher) else self.device
            outputs.append(
                teacher_outputs(
                    model,
                    self.train_set.x,
                    key=key,
                    cache_dir=cache_dir,
                    layers=taps[0],
                    embedding=taps[1],
                    device=device,
                )
            )
            model.cpu()
        logits = ensemble_logits(
            [o.logits for o in outputs],
            cfg.ensemble_weights,
            cfg.temperature,
        )
        return CachedTeacher(logits, outputs[0])

    def calibration_inputs(self) -> torch.Tensor:
        """The training images that calibrate the INT8 ranges (edgekd.calibration)."""
        c = self.cfg
        return calibration_inputs(
            self.data.train, c.calib_samples, c.seed, c.calib_manifest, c.data
        )


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
    return resume.check(changed, lambda stage: stage_started(ctx, stage), str(run.root))


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


def _train(
    ctx: Context,
    student: nn.Module,
    setup: DistillSetup,
    qat: bool,
    teacher: TeacherSource | None = None,
) -> list[dict]:
    stage = "quantize" if qat else "distill"
    return fit(
        student, ctx.train_set, teacher or setup.teacher(ctx), setup.objective,
        _epoch_config(ctx.cfg, qat),
        device=ctx.device, val=ctx.data.val, checkpoint=ctx.run.checkpoint(stage),
        label="qat" if qat else "distill", layers=setup.layers, embedding=setup.embedding,
        augment=make_augment(ctx.cfg.augment),
    )  # fmt: skip


def _baseline_arm(ctx: Context, student: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
    """The control arm (--baseline): a copy of the untrained ``student`` trained on labels alone
    (loss ce) with the same schedule, seed, data order and augmentation → student_baseline.pt,
    which --resume reuses. Its random draws are forked off, so the distilled arm's are those of a
    run without --baseline."""
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
        batches = BatchFingerprint(no_teacher)
        arm = {"loss": "ce", "train_samples": len(train), "init_sha256": state_sha256(baseline)}
        history = fit(
            baseline, train, batches, make_objective("ce"), _epoch_config(cfg, False),
            device=device, val=ctx.data.val, checkpoint=run.checkpoint("baseline"),
            label="baseline", augment=make_augment(cfg.augment),
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
        batches = BatchFingerprint(setup.teacher(ctx))
    history = _train(ctx, student, setup, qat=False, teacher=batches)
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


def _estimates(
    sizing: dict[str, Any],
    models: dict[str, Path],
    latency: dict[str, LatencyStats],
    target: Target,
    on_device: bool,
) -> dict[str, Any]:
    """The sizing estimate, each artifact's roofline counted from its ONNX graph (with the
    target's overheads: ``estimate_ms``; or why it is unavailable), and measured p90 over each
    where the measurement was taken on the target (host targets, or --remote)."""
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
    if target.family == "host" or on_device:
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
    gates = gate(
        target, acc, latency, deployed, cfg.max_accuracy_drop, cfg.int8_must_pay, remote is not None
    )
    lint = (run.record("export") or {}).get("tensorrt_lint")
    if lint is not None:
        gates.check(
            not lint,
            "tensorrt_qdq_lint",
            f"{len(lint)} violation(s), first: {lint[0] if lint else ''}",
        )
    control = _control_record(ctx)
    if control is not None and cfg.min_kd_gain is not None:
        gain = control["gain"]
        gates.check(
            gain["gain_pt"] >= cfg.min_kd_gain,
            "kd_gain",
            f"distillation gains {gain['gain_pt']:+.2f} pt over the baseline trained on labels "
            f"alone (95 % CI [{gain['ci_pt'][0]:+.2f}, {gain['ci_pt'][1]:+.2f}]), below "
            f"--min-kd-gain {cfg.min_kd_gain:g} pt",
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
        "estimate": _estimates(sizing, models, latency, target, remote is not None),
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


STAGES = {"distill": distill, "quantize": quantize, "export": export, "validate": validate}
TRAINING = ("distill", "quantize")


def _stage_worker(stage: str, root: str) -> None:
    """One training process of ``--nproc N`` (module level: spawned processes import it)."""
    run = RunDir(root)
    STAGES[stage](Context(run.config(), run))


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
    return STAGES[stage](ctx, **options)


def stage_done(ctx: Context, stage: str) -> bool:
    """Whether ``stage`` finished: its record, written after its outputs, is there."""
    run = ctx.run
    done = {
        "distill": run.record("distill") is not None and run.student_pt.exists(),
        "quantize": ctx.scheme is None
        or (run.record("quantize") is not None and run.student_qat_pt.exists()),
        "export": run.record("export") is not None,
        "validate": False,  # always re-measured: latency is a property of the moment
    }
    return done[stage]


def stage_started(ctx: Context, stage: str) -> bool:
    """Whether ``stage`` has written anything into the run folder: a checkpoint or an output."""
    run = ctx.run
    outputs = {
        "distill": [run.student_pt],
        "quantize": [run.student_qat_pt, run.logs / "quantize.json"],
        "export": [run.teacher_onnx, run.logs / "export.json"],
        "validate": [],  # re-measured on every resume: what it depends on may always change
    }[stage]
    return run.checkpoint(stage).exists() or any(p.exists() for p in outputs)


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
