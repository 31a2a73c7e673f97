"""Target profiles: the device a student is sized, quantized, exported and validated for.

A profile is one TOML file (bundled ones live in the top-level ``targets/`` folder, installed
as the package ``edgekd._targets``). Its keys are the field names of the dataclasses below;
optional values are written by leaving the key out, as TOML has no null. Every problem found
while loading raises :class:`~edgekd.errors.BadInput` with one line naming the file and field.
"""

from __future__ import annotations

import difflib
import math
import tomllib
import typing
from dataclasses import MISSING, Field, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from edgekd.errors import BadInput, EdgekdError, printable, shown
from edgekd.toml_file import read_toml
from edgekd.typed_toml import build

DEFAULT_TARGET = "host-cpu"


def _one_of(*choices: str) -> Any:
    return field(metadata={"choices": choices})


def _at_least(minimum: int, default: Any = MISSING) -> Any:
    return field(default=default, metadata={"minimum": minimum})


@dataclass(frozen=True, kw_only=True)
class Hardware:
    """Datasheet facts used to size a student (roofline) and to describe the device.

    Throughputs are dense (no structured sparsity) peaks of the unit the runtime computes on.
    ``int8_tops`` left out means the hardware has no INT8 path, except for the ``host`` family,
    where it means "not known until measured".
    """

    cpu: str | None = None
    gpu: str | None = None
    sm: str | None = None  # CUDA compute capability, e.g. "sm_87"
    int8_tops: float | None = None
    fp16_tflops: float | None = None
    fp32_tflops: float | None = None
    memory_gb: float
    bandwidth_gbs: float
    dla_cores: int = _at_least(0, default=0)
    tensorrt: str | None = None  # newest TensorRT version the device's software stack ships
    jetpack: str | None = None
    source: str  # datasheet(s) the facts come from; derived numbers are commented in the file


@dataclass(frozen=True, kw_only=True)
class Budgets:
    """What the student must fit: p90 latency at batch 1, parameter count, file size, memory."""

    p90_latency_ms: float
    max_params: int
    max_model_mb: float  # size of the deployed model file, 10^6 bytes
    max_memory_mb: float  # peak memory of the inference session, 10^6 bytes


@dataclass(frozen=True, kw_only=True)
class LatencyMethod:
    """How latency is measured (MLPerf single-stream: one query at a time)."""

    warmup: int = _at_least(0)  # untimed queries before measuring
    min_queries: int = _at_least(64)  # timed queries; p99 needs >= 662
    min_duration_s: float  # keep querying until both minimums are met
    threads: int = _at_least(0)  # ONNX Runtime intra-op threads; 0 = runtime default
    batch: int = 1


@dataclass(frozen=True, kw_only=True)
class Overhead:
    """Fixed costs the roofline leaves out, in microseconds: one per inference (the runtime call,
    input/output copies, synchronisation) and one per layer (a kernel launch or an operator
    dispatch). ``source`` says where the figures come from (a measurement, or how derived)."""

    per_inference_us: float
    per_layer_us: float
    source: str


@dataclass(frozen=True, kw_only=True)
class Target:
    """A device profile.

    ``quant_scheme`` is the INT8 arithmetic QAT simulates and export emits: ``"tensorrt"`` is
    symmetric int8 Q/DQ (zero point 0) as TensorRT requires; ``"onnxruntime"`` is uint8
    asymmetric activations with int8 per-channel weights, which ONNX Runtime fuses into
    integer kernels; ``"qnn"`` is the same arithmetic with Q/DQ after every op and a static batch
    of 1, as ONNX Runtime's QNN provider needs to place the whole graph on the NPU; ``"none"``
    goes with ``precision = "fp16"`` (no quantization).
    """

    name: str  # defaults to the file name without .toml
    description: str
    family: str = _one_of("jetson", "mobile", "host")
    runtime: str = _one_of("tensorrt", "onnxruntime")
    execution_providers: tuple[str, ...]  # ONNX Runtime providers, in order of preference
    precision: str = _one_of("int8", "fp16")
    quant_scheme: str = _one_of("tensorrt", "onnxruntime", "qnn", "none")
    hardware: Hardware
    budgets: Budgets
    latency: LatencyMethod
    overhead: Overhead | None = None  # left out: the latency estimate is the bare roofline
    path: Path  # the file it was loaded from (set by the loader, not a TOML key)

    def peak_ops_per_s(self, precision: str) -> float | None:
        """Peak operations per second at ``precision`` ("int8", "fp16", "fp32"); None if unknown."""
        attr = {"int8": "int8_tops", "fp16": "fp16_tflops", "fp32": "fp32_tflops"}[precision]
        value = getattr(self.hardware, attr)
        return None if value is None else value * 1e12

    @property
    def bytes_per_s(self) -> float:
        """Memory bandwidth in bytes per second."""
        return self.hardware.bandwidth_gbs * 1e9


# Cross-field rules: (broken when, field to blame, what it must be; formatted with t=target).
_RULES: list[tuple[typing.Callable[[Target], bool], str, str]] = [
    (
        lambda t: (t.precision == "fp16") != (t.quant_scheme == "none"),
        "quant_scheme",
        'must be "none" exactly when precision is "fp16", got precision "{t.precision}" with '
        'quant_scheme "{t.quant_scheme}"',
    ),
    (
        lambda t: t.precision == "int8" and t.hardware.int8_tops is None and t.family != "host",
        "hardware.int8_tops",
        'is needed for precision "int8" (left out, it means the hardware has no INT8; '
        'use precision "fp16" with quant_scheme "none")',
    ),
    (
        lambda t: t.runtime == "tensorrt" and t.quant_scheme in ("onnxruntime", "qnn"),
        "quant_scheme",
        'must be "tensorrt" or "none" for runtime "tensorrt" (TensorRT needs zero point 0), '
        'got "{t.quant_scheme}"',
    ),
]


def load_target(name_or_path: str | Path) -> Target:
    """Load a bundled profile by name (``"jetson-orin-nano-8gb"``) or a profile file by path."""
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or text.endswith(".toml") or _is_path(text):
        return _load_file(Path(name_or_path))
    bundled = {p.stem: p for p in _bundled_files()}
    if text not in bundled:
        raise BadInput(_unknown_target_message(text, list(bundled)))
    return _load_file(bundled[text])


def list_targets() -> list[Target]:
    """All bundled profiles, sorted by name."""
    return sorted((_load_file(p) for p in _bundled_files()), key=lambda t: t.name)


def _is_path(text: str) -> bool:
    """Whether ``text`` names something on disk (a name the OS cannot take, too long or with a
    NUL, names nothing)."""
    try:
        return Path(text).exists()
    except (OSError, ValueError):
        return False


def _bundled_dir() -> Path:
    try:
        return Path(str(resources.files("edgekd._targets")))
    except ModuleNotFoundError:  # a source checkout that is not installed
        checkout = Path(__file__).resolve().parent.parent / "targets"
        if not checkout.is_dir():
            raise EdgekdError(
                "bundled target profiles missing: edgekd._targets not installed"
            ) from None
        return checkout


def _bundled_files() -> list[Path]:
    return sorted(_bundled_dir().glob("*.toml"))


def _unknown_target_message(name: str, known: list[str]) -> str:
    key = name.lower()
    near = [k for k in known if key in k]  # names containing it; failing that, close spellings
    near = near or difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    hint = f"; did you mean: {', '.join(near)}?" if near else ""
    return f"unknown target {shown(name)}{hint} (edgekd targets list shows all)"


def _load_file(path: Path) -> Target:
    where = printable(path)
    try:
        data = read_toml(path)
    except tomllib.TOMLDecodeError as e:
        raise BadInput(f"{where}: invalid TOML: {e}") from None
    except (OSError, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise BadInput(f"{where}: cannot read target profile: {reason}") from None
    data.setdefault("name", path.stem)
    target = build(Target, data, where, preset={"path": path}, rule=_rule)
    for broken, key, must in _RULES:
        if broken(target):
            raise BadInput(f"{where}: {key} {must.format(t=target)}")
    _check_providers(target, where)
    return target


def _rule(value: Any, hint: Any, spec: Field) -> str | None:
    """What a profile's value must be (one of its choices, a non-empty string, a positive number
    or integer, at least its minimum), in words, when it is not; None when it is fine."""
    choices = spec.metadata.get("choices")
    minimum = spec.metadata.get("minimum")
    if choices:
        ok, want = value in choices, "one of " + ", ".join(f'"{c}"' for c in choices)
    elif hint is str:
        ok, want = isinstance(value, str) and bool(value.strip()), "a non-empty string"
    elif typing.get_origin(hint) is tuple:
        ok = isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)
        want = "a non-empty list of strings"
    elif hint is int:  # TOML integers are 64-bit
        least = 1 if minimum is None else minimum
        ok = isinstance(value, int) and not isinstance(value, bool) and least <= value < 2**63
        want = "a positive integer" if minimum is None else f"an integer >= {minimum}"
        want += " below 2^63" if isinstance(value, int) and value >= 2**63 else ""
    elif hint is float:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        ok, want = number and _finite(value) and value > 0, "a positive number"
    else:
        raise TypeError(f"no check for {spec.name}: {hint}")
    return None if ok else want


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an integer past float's range
        return False


def _check_providers(target: Target, where: str) -> None:
    import onnxruntime  # lazily: only the provider names are needed

    known = onnxruntime.get_all_providers()
    for name in target.execution_providers:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise BadInput(
                f"{where}: execution_providers: unknown provider {printable(name)}{hint}"
            )
