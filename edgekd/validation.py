"""One validation layer for a run's config: every field's type, finiteness and range, checked when
a ``CompressConfig`` is built (the CLI, ``--config`` and the Python API all build one), and the run
folder (``--out``) checked before anything is written to it."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from edgekd.distill.augment import AUGMENTATIONS, mixing
from edgekd.distill.features import parse_pairs
from edgekd.distill.losses import LOSSES, parse_loss_spec
from edgekd.distill.trainer import OPTIMIZERS
from edgekd.errors import BadInput, shown
from edgekd.models.students import FAMILIES
from edgekd.quant.calibrators import get_calibrator
from edgekd.quant.sensitivity import parse_keep_float
from edgekd.quant.weight_bits import WEIGHT_BITS
from edgekd.typed_toml import convert, hints, type_name

SEED_MAX = 2**63 - 1  # TOML's largest integer; numpy and torch take any seed up to it


@dataclass(frozen=True)
class Range:
    """A finite number within bounds; ``open_low`` excludes ``low`` itself."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def holds(self, v: float) -> bool:
        if isinstance(v, float) and not math.isfinite(v):
            return False
        if self.low is not None and (v < self.low or (self.open_low and v == self.low)):
            return False
        return self.high is None or (v < self.high or (not self.open_high and v == self.high))

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            left, right = "(" if self.open_low else "[", ")" if self.open_high else "]"
            return f"a finite number in {left}{self.low:g}, {self.high:g}{right}"
        if self.low is not None:
            return f"a finite number {'above' if self.open_low else 'of at least'} {self.low:g}"
        return "a finite number"


POSITIVE = Range(0, open_low=True)
NON_NEGATIVE = Range(0)

# Numbers: each field's range (an int field's range is checked on its integer value).
RANGES: dict[str, Range] = {
    "temperature": POSITIVE,
    "alpha": Range(0, 1),
    "mix_alpha": POSITIVE,
    "nproc": Range(1),
    "epochs": Range(1),
    "qat_epochs": Range(0),
    "lr": POSITIVE,
    "qat_lr": POSITIVE,
    "batch_size": Range(1),
    "val_fraction": Range(0, 1, open_low=True, open_high=True),
    "calib_samples": Range(1),
    "min_compression": POSITIVE,
    "max_accuracy_drop": Range(0, 100),
    "seed": Range(0, SEED_MAX),
    "min_kd_gain": Range(-100, 100),
}
# Lists (or a table) of numbers: each item's range, in words.
ITEM_RANGES: dict[str, tuple[Range, str]] = {
    "mean": (Range(), "finite"),
    "std": (POSITIVE, "positive and finite"),
    "input_size": (Range(1), "at least 1"),
    "ensemble_weights": (NON_NEGATIVE, "non-negative and finite"),
    "loss_weights": (NON_NEGATIVE, "non-negative and finite"),
}
RANGE_WORDS = {"epochs": "at least 1", "nproc": "at least 1", "batch_size": "at least 1",
               "calib_samples": "at least 1", "qat_epochs": "0 or more",
               "seed": f"an integer from 0 to {SEED_MAX}"}  # fmt: skip


def _choice(valid: tuple[Any, ...] | list[Any]) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if value not in valid:
            raise ValueError(f"valid: {', '.join(map(str, valid))}")

    return check


def _device(value: str) -> None:
    if value == "auto":
        return
    try:
        torch.device(value)
    except RuntimeError:
        raise ValueError("expected auto, cpu, cuda or cuda:N") from None


# Strings with a fixed vocabulary: a check that raises ValueError (the valid choices) or BadInput.
CHOICES: dict[str, Callable[[Any], Any]] = {
    "family": _choice(["auto", *FAMILIES]),
    "loss": parse_loss_spec,
    "pairs": parse_pairs,
    "augment": _choice(AUGMENTATIONS),
    "optimizer": _choice(OPTIMIZERS),
    "calibrator": get_calibrator,
    "keep_float": parse_keep_float,
    "weight_bits": _choice(WEIGHT_BITS),
    "device": _device,
}


OPTIONS = {"loss_weights": "--loss-weight", "pairs": "--pair"}  # fields whose option differs


def option(name: str) -> str:
    """How the user wrote field ``name``: its command-line option."""
    return OPTIONS.get(name, "--" + name.replace("_", "-"))


def _check_field(name: str, value: Any, tp: Any) -> None:
    opt = option(name)
    try:
        convert(value, tp)
    except TypeError:
        raise BadInput(f"{opt} {shown(value)}: expected {type_name(tp)}") from None
    if value is None:
        return
    texts = [value] if isinstance(value, str) else value if name in ("ensemble", "pairs") else []
    for text in texts:
        if not text.strip() or "\x00" in text:
            raise BadInput(
                f"{opt} {shown(text)}: expected a non-empty string without NUL characters"
            )
    if name in RANGES and not RANGES[name].holds(value):
        rule = RANGE_WORDS.get(name) or RANGES[name].describe()
        raise BadInput(f"{opt} must be {rule} (got {shown(value)})")
    if name in ITEM_RANGES:
        items = list(value.values()) if isinstance(value, dict) else value
        rule, words = ITEM_RANGES[name]
        if not all(rule.holds(v) for v in items):
            raise BadInput(f"{opt} values must be {words} (got {shown(value)})")
        if not items and name != "loss_weights":
            raise BadInput(f"{opt}: give at least one value")
    if name == "input_size" and value is not None and len(value) != 2:
        raise BadInput(f"{opt} {shown(value)}: expected H,W")
    if name in CHOICES:
        try:
            CHOICES[name](value)
        except ValueError as e:
            raise BadInput(f"{opt} {shown(value)}: {e}") from None


def check_config(cfg: Any) -> None:
    """Raise a one-line BadInput for the first field of ``cfg`` (a CompressConfig) that is the
    wrong type, not finite or out of range."""
    types = hints(type(cfg))
    for f in fields(cfg):
        _check_field(f.name, getattr(cfg, f.name), types[f.name])


def check_combination(cfg: Any) -> None:
    """Raise a one-line BadInput where fields of ``cfg`` do not fit together (checked once the
    config is resolved: a partial config may be completed first)."""
    if cfg.ensemble_weights is not None and len(cfg.ensemble_weights) != 1 + len(cfg.ensemble):
        raise BadInput(
            f"--ensemble-weights gives {len(cfg.ensemble_weights)} weight(s) for "
            f"{1 + len(cfg.ensemble)} teacher(s)"
        )
    if cfg.ensemble_weights is not None and not sum(cfg.ensemble_weights) > 0:
        raise BadInput(f"--ensemble-weights {cfg.ensemble_weights}: need a positive sum")
    if cfg.unlabeled_only and not cfg.unlabeled:
        raise BadInput("--unlabeled-only needs --unlabeled PATH")
    terms = parse_loss_spec(cfg.loss)
    extra = sorted(set(cfg.loss_weights) - set(terms))
    if extra:
        raise BadInput(
            f"--loss-weight {extra[0]}=...: {extra[0]!r} is not a term of --loss {cfg.loss} "
            f"(its terms: {', '.join(terms) or 'none, labels alone'})"
        )
    (alpha,) = [f.default for f in fields(cfg) if f.name == "alpha"]
    if cfg.alpha != alpha and "kd" not in terms:
        raise BadInput(
            f"--alpha {cfg.alpha:g} is the kd weight, and --loss {cfg.loss} has no kd term: "
            f"add kd to the loss or drop --alpha"
        )
    mixes = mixing(cfg.augment) is not None
    if cfg.mix_alpha is not None and not mixes:
        raise BadInput(
            f"--mix-alpha sets the mixup/cutmix share; --augment {cfg.augment} does not mix: "
            "add +mixup or +cutmix, or drop --mix-alpha"
        )
    hard = [t for t in terms if LOSSES[t].hard_labels]
    if mixes and hard:
        raise BadInput(
            f"--loss {hard[0]} needs one target class per image, and --augment {cfg.augment} "
            "mixes two: drop the mixing or use another loss"
        )
    if cfg.min_kd_gain is not None and not cfg.baseline:
        raise BadInput("--min-kd-gain gates the gain over a baseline student: add --baseline")
    if cfg.baseline and not terms:  # loss ce: labels alone
        raise BadInput(
            "--baseline trains the student on labels alone (loss ce) to compare with "
            "distillation; --loss ce is that already: give a distillation loss or drop --baseline"
        )
    if cfg.baseline and cfg.unlabeled_only:
        raise BadInput("--baseline trains on the labelled data, which --unlabeled-only leaves out")
    if parse_keep_float(cfg.keep_float) and not cfg.sensitivity:
        raise BadInput(
            f"--keep-float {cfg.keep_float} chooses layers by their sensitivity: "
            "drop --no-sensitivity"
        )


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_out(out: str | Path, resume: bool = False) -> None:
    """Refuse, in one line, a run folder that cannot be used: a file, a path through a file, an
    existing run without ``resume``, or a place that cannot be written (probed by writing)."""
    out = Path(out)
    if "\x00" in str(out):
        raise BadInput("--out: the path holds a NUL character")
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out {out}: exists and is not a folder; choose a folder")
    if (out / "config.json").exists() and not resume:
        raise BadInput(
            f"{out} already holds a run; pass --resume to continue it or choose another --out"
        )
    base = _nearest_existing(out)
    if not base.is_dir():
        raise BadInput(f"--out {out}: {base} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".edgekd-probe-", dir=base)
    except OSError as e:
        raise BadInput(f"--out {out}: cannot create files in {base} ({e.strerror})") from None
    os.close(fd)
    os.unlink(probe)
