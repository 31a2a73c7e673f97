"""The resolved configuration of a run, and the bundled example's defaults."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

from edgekd.errors import BadInput
from edgekd.validation import check_combination, check_config

EXAMPLE_TEACHER = "edgekd.example.teacher:fashion_cnn"
EXAMPLE_MEAN = [0.2860]
EXAMPLE_STD = [0.3530]
EXAMPLE_CALIB_SAMPLES = 512  # indices in calib/fashion-mnist-example.toml


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
    augment: str = "none"  # none | crop | crop+flip, each +mixup or +cutmix (the teacher: live)
    mix_alpha: float | None = None  # Beta(a, a) of mixup/cutmix; None: 1.0
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

    def __post_init__(self) -> None:
        check_config(self)  # type, finiteness and range of every field (edgekd.validation)

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
        """Fill in the bundled example when neither teacher nor data is given, and the target's
        default weight bits."""
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
                # the example's manifest is its 512-image calibration set; another
                # --calib-samples draws that many at random instead
                calib_manifest=cfg.calib_manifest
                or (str(calib) if cfg.calib_samples == EXAMPLE_CALIB_SAMPLES else None),
            )
        elif cfg.teacher is None or cfg.data is None:
            raise BadInput("give both --teacher and --data, or neither to run the bundled example")
        if cfg.weight_bits is None:
            from edgekd.quant.weight_bits import default_weight_bits
            from edgekd.targets import load_target

            cfg = replace(cfg, weight_bits=default_weight_bits(load_target(cfg.target))[0])
        check_combination(cfg)
        return cfg


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
