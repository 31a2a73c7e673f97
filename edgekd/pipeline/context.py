"""The context of one run: its config, folder, data, teachers and student factory, loaded once and shared by the stages."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekd.calibration import calibration_inputs
from edgekd.config import CompressConfig
from edgekd.data import Dataset, Split, load_dataset, load_unlabeled
from edgekd.distill.augment import MIX_ALPHA, mixing
from edgekd.distill.cache import cache_key, default_cache_dir, teacher_fingerprint, teacher_outputs
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
    resolve_device,
)
from edgekd.errors import BadInput, first_line
from edgekd.models.profile import profile
from edgekd.models.students import StudentSpec, build_student
from edgekd.models.teacher import OnnxTeacher, check_classes, load_model, load_weights
from edgekd.progress import log
from edgekd.quant.prepare import (
    freeze,
    prepare_qat,
)
from edgekd.quant.scheme import QuantScheme, get_scheme
from edgekd.quant.weight_bits import weight_qmax
from edgekd.roofline import load_cost
from edgekd.run import RunDir
from edgekd.targets import Target, load_target


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
                "mix_alpha": (cfg.mix_alpha or MIX_ALPHA) if mixing(cfg.augment) else None,
                "train_accuracy_on": "labelled samples; a mixed image: its larger label share",
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
