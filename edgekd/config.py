"""The resolved configuration of a run, and the bundled example's defaults."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

from edgekd.distill.augment import AUGMENTATIONS
from edgekd.errors import BadInput
from edgekd.quant.calibrators import get_calibrator

EXAMPLE_TEACHER = "edgekd.example.teacher:fashion_cnn"
EXAMPLE_MEAN = [0.2860]
EXAMPLE_STD = [0.3530]


@dataclass(frozen=True)
class CompressConfig:
    """Everything that decides what ``compress`` produces."""

    teacher: str | None = None
    weights: str | None = None
    data: str | None = None
    target: str = "host-cpu"
    student: str | None = None  # module:factory overriding the sized student
    family: str = "auto"  # a student family (edgekd.models.students), or every one that imports
    ensemble: list[str] = field(default_factory=list)  # more teachers, SPEC[@WEIGHTS]
    ensemble_weights: list[float] | None = None  # one per teacher; default: equal
    loss: str = "kd"  # NAME[+NAME...]
    loss_weights: dict[str, float] = field(default_factory=dict)  # per loss; default: the papers'
    pairs: list[str] = field(default_factory=list)  # teacher.MODULE=student.MODULE; default: auto
    temperature: float = 4.0
    alpha: float = 0.9  # kd weight; CE gets 1 - alpha when kd is used
    unlabeled: str | None = None  # a transfer set labelled only by the teacher(s)
    unlabeled_only: bool = False  # train on the transfer set alone (labelled data: val, calib)
    augment: str = "none"  # none | crop | crop+flip (random: the teacher then runs live)
    optimizer: str = "adamw"
    nproc: int = 1  # training processes (DDP)
    cache_dir: str | None = None  # teacher cache; default: $EDGEKD_CACHE or ~/.cache/edgekd
    epochs: int = 15
    qat_epochs: int = 3
    lr: float = 3e-3
    qat_lr: float | None = None  # default: 1 % of lr (NVIDIA's QAT recipe)
    batch_size: int = 128
    mean: list[float] | None = None
    std: list[float] | None = None
    input_size: list[int] | None = None
    val_fraction: float = 0.2
    calib_samples: int = 512
    calib_manifest: str | None = None
    calibrator: str | None = None  # activation ranges (edgekd.quant.calibrators); None: scheme's
    min_compression: float = 8.0
    max_accuracy_drop: float = 1.0  # points of top-1 accuracy vs the teacher
    keep_float: str | None = None  # "N" most sensitive layers, or "auto"; None = all INT8
    sensitivity: bool = True  # score each layer quantized alone before QAT (--keep-float needs it)
    weight_bits: int | None = None  # 8, or 7 against u8s8 saturation; None: the target's default
    int8_must_pay: bool = True  # gate: INT8 slower than its float twin fails validation
    baseline: bool = False  # also train the student on labels alone: the distillation gain
    min_kd_gain: float | None = None  # gate: least gain over the baseline, points; None = none
    device: str = "auto"
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "config") -> CompressConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise BadInput(f"{where}: unknown key(s) {', '.join(unknown)}")
        return cls(**d)

    @property
    def effective_qat_lr(self) -> float:
        return self.qat_lr if self.qat_lr is not None else self.lr * 0.01

    def resolved(self) -> CompressConfig:
        """Fill in the bundled example when neither teacher nor data is given; check ranges."""
        cfg = self
        if cfg.teacher is None and cfg.data is None:
            example = resources.files("edgekd.example")
            calib = resources.files("edgekd._calib") / "fashion-mnist-example.toml"
            cfg = replace(
                cfg,
                teacher=EXAMPLE_TEACHER,
                weights=str(example / "teacher.pt"),
                data=str(example / "fashion_mnist_small.npz"),
                mean=cfg.mean or EXAMPLE_MEAN,
                std=cfg.std or EXAMPLE_STD,
                calib_manifest=cfg.calib_manifest or str(calib),
            )
        elif cfg.teacher is None or cfg.data is None:
            raise BadInput("give both --teacher and --data, or neither to run the bundled example")
        for name in ("epochs", "batch_size", "calib_samples"):
            if getattr(cfg, name) < 1:
                raise BadInput(f"--{name.replace('_', '-')} must be at least 1")
        if cfg.nproc < 1:
            raise BadInput("--nproc must be at least 1")
        if cfg.augment not in AUGMENTATIONS:
            raise BadInput(f"--augment {cfg.augment!r}: valid: {', '.join(AUGMENTATIONS)}")
        if cfg.calibrator is not None:
            get_calibrator(cfg.calibrator)
        if cfg.ensemble_weights is not None and len(cfg.ensemble_weights) != 1 + len(cfg.ensemble):
            raise BadInput(
                f"--ensemble-weights gives {len(cfg.ensemble_weights)} weight(s) for "
                f"{1 + len(cfg.ensemble)} teacher(s)"
            )
        if cfg.unlabeled_only and not cfg.unlabeled:
            raise BadInput("--unlabeled-only needs --unlabeled PATH")
        _check_baseline(cfg)
        if cfg.qat_epochs < 0:
            raise BadInput("--qat-epochs must be 0 or more")
        if cfg.keep_float is not None:
            from edgekd.quant.sensitivity import parse_keep_float

            if parse_keep_float(cfg.keep_float) and not cfg.sensitivity:
                raise BadInput(
                    f"--keep-float {cfg.keep_float} chooses layers by their sensitivity: "
                    "drop --no-sensitivity"
                )
        if cfg.weight_bits is None:
            from edgekd.quant.weight_bits import default_weight_bits
            from edgekd.targets import load_target

            cfg = replace(cfg, weight_bits=default_weight_bits(load_target(cfg.target))[0])
        from edgekd.quant.weight_bits import weight_qmax

        weight_qmax(cfg.weight_bits)
        for name in ("lr", "temperature", "min_compression", "max_accuracy_drop"):
            if getattr(cfg, name) < 0 or (name != "max_accuracy_drop" and getattr(cfg, name) == 0):
                raise BadInput(f"--{name.replace('_', '-')} must be positive")
        return cfg


def _check_baseline(cfg: CompressConfig) -> None:
    """--baseline needs a distillation loss and labels; --min-kd-gain needs --baseline."""
    if cfg.min_kd_gain is not None:
        if not cfg.baseline:
            raise BadInput("--min-kd-gain gates the gain over a baseline student: add --baseline")
        if not math.isfinite(cfg.min_kd_gain):
            raise BadInput(
                f"--min-kd-gain must be a finite number of points, got {cfg.min_kd_gain}"
            )
    if cfg.baseline and cfg.loss.strip().lower() == "ce":
        raise BadInput(
            "--baseline trains the student on labels alone (loss ce) to compare with "
            "distillation; --loss ce is that already: give a distillation loss or drop --baseline"
        )
    if cfg.baseline and cfg.unlabeled_only:
        raise BadInput("--baseline trains on the labelled data, which --unlabeled-only leaves out")


def quantize_changes(
    ptq: bool = False,
    calibrator: str | None = None,
    qat_epochs: int | None = None,
    weight_bits: int | None = None,
) -> dict[str, Any]:
    """Config fields for ``--ptq`` (calibration only: no QAT epochs), ``--calibrator`` and
    ``--weight-bits``."""
    if ptq and qat_epochs:
        raise BadInput(f"--ptq runs no QAT epochs; drop --qat-epochs {qat_epochs}")
    changes: dict[str, Any] = {"qat_epochs": 0} if ptq else {}
    if calibrator is not None:
        changes["calibrator"] = calibrator
    if weight_bits is not None:
        changes["weight_bits"] = weight_bits
    return changes


def read_config(path: Path) -> CompressConfig:
    try:
        return CompressConfig.from_dict(json.loads(path.read_text()), where=str(path))
    except (OSError, json.JSONDecodeError, TypeError) as e:
        raise BadInput(f"{path}: not a readable run config ({e})") from None
