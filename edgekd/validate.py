"""Accuracy and latency of the exported models on the runtime, and the gates that decide."""

from __future__ import annotations

import importlib.util
import math
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.data import Split
from edgekd.runners.base import Runner
from edgekd.runners.latency import LatencyStats, stats
from edgekd.runners.ort_runner import OrtRunner
from edgekd.runners.remote import SshSession, remote_runner
from edgekd.runners.trt_runner import TrtRunner
from edgekd.targets import Target

ROUNDS = 3  # interleaved latency rounds per validation
MIN_ROUND_QUERIES = 64  # a round is a measurement of its own: MLPerf's single-stream floor


def top1(logits: np.ndarray) -> np.ndarray:
    return logits.argmax(axis=1)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((top1(logits) == labels).mean())


def per_class_accuracy(logits: np.ndarray, labels: np.ndarray, classes: int) -> list[float | None]:
    """Top-1 accuracy within each true class; None for a class absent from ``labels``."""
    hit = top1(logits) == labels
    return [float(hit[labels == c].mean()) if (labels == c).any() else None for c in range(classes)]


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of samples on which two models pick the same top-1 class."""
    return float((top1(a) == top1(b)).mean())


@dataclass
class ModelResult:
    """One ONNX model's predictions and latency; the engine the device built, TensorRT only."""

    logits: np.ndarray
    latency: LatencyStats
    engine: dict[str, Any] | None = None


def make_runner(
    path: Path, target: Target, session: SshSession | None = None, keep_dir: Path | None = None
) -> Runner:
    """The runner ``target`` asks for, on the device behind ``session`` or else here: the runtime
    follows the target (a native TensorRT engine for a TensorRT target, kept in ``keep_dir``;
    ONNX Runtime otherwise), the transport is separate. Here without TensorRT installed, a
    TensorRT target's models run in ONNX Runtime, and their latency says "this host"."""
    if session is not None:
        return remote_runner(path, target, session, keep_dir)
    if target.runtime == "tensorrt" and importlib.util.find_spec("tensorrt") is not None:
        return TrtRunner(path, target, keep_dir)
    return OrtRunner(path, target.execution_providers, threads=target.latency.threads)


def run_models(
    paths: dict[str, Path],
    val: Split,
    target: Target,
    session: SshSession | None = None,
    keep_dir: Path | None = None,
) -> dict[str, ModelResult]:
    """Predict the validation split with each model and time single queries with the target's
    latency method, on the device behind ``session`` when given, else here with ONNX Runtime.

    The timing runs in interleaved rounds (:func:`time_interleaved`), so that a drift in the
    machine's load falls on every model alike and their ratios hold.
    """
    method = target.latency
    with ExitStack() as stack:
        runners = {
            name: stack.enter_context(make_runner(path, target, session, keep_dir))
            for name, path in paths.items()
        }
        logits = {name: runner.predict(val.x.numpy()) for name, runner in runners.items()}
        latency = time_interleaved(
            runners,
            val.x[: method.batch].numpy(),
            warmup=method.warmup,
            queries=method.min_queries,
            seconds=method.min_duration_s,
        )
    if target.family != "host" and session is None:
        latency = {
            name: replace(s, where=f"{s.where} (this host, not {target.name})")
            for name, s in latency.items()
        }
    return {
        name: ModelResult(logits[name], latency[name], getattr(r, "engine", None))
        for name, r in runners.items()
    }


def time_interleaved(
    runners: dict[str, Runner],
    sample: np.ndarray,
    *,
    warmup: int,
    queries: int,
    seconds: float,
    label: str = "latency",
    rounds: int = ROUNDS,
) -> dict[str, LatencyStats]:
    """Single-stream latency of each runner on ``sample`` in ``rounds`` interleaved rounds (every
    runner once per round, each round with the full warm-up and 1/rounds of the ``queries``, at
    least 64, and of the ``seconds``), the rounds' queries pooled per runner (entered ones)."""
    times: dict[str, list[float]] = {name: [] for name in runners}
    where: dict[str, str] = {}
    for i in range(rounds):
        for name, runner in runners.items():
            part = runner.time(
                sample,
                warmup=warmup,
                min_queries=max(MIN_ROUND_QUERIES, math.ceil(queries / rounds)),
                min_duration_s=seconds / rounds,
                label=f"{label} {name} ({i + 1}/{rounds})",
            )
            times[name] += part.times
            where[name] = part.where
    return {name: stats(times[name], where[name]) for name in runners}


@dataclass
class Gates:
    """Pass/fail checks; ``failed`` and ``skipped`` say why in one line each."""

    checked: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failed

    def check(self, ok: bool, name: str, detail: str) -> None:
        self.checked.append(name)
        if not ok:
            self.failed.append(f"{name}: {detail}")

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "checked": self.checked,
            "failed": self.failed,
            "skipped": self.skipped,
        }


def gate(
    target: Target,
    accuracy_: dict[str, float | None],
    latency: dict[str, LatencyStats],
    deployed: str,
    max_accuracy_drop: float,
    int8_must_pay: bool = True,
    on_device: bool = False,
) -> Gates:
    """Accuracy drop of the deployed model vs the teacher; its p90 vs the target's budget; an INT8
    model must be faster than its float twin on the same runtime (measured here on host targets,
    or ``on_device``: on the target itself, over SSH)."""
    gates = Gates()
    drop = (accuracy_["teacher"] - accuracy_[deployed]) * 100
    gates.check(
        drop <= max_accuracy_drop,
        "accuracy_drop",
        f"{deployed} is {drop:.2f} pt below the teacher (allowed {max_accuracy_drop:g} pt)",
    )
    budget = target.budgets.p90_latency_ms
    if target.family == "host" or on_device:
        p90 = latency[deployed].p90
        gates.check(
            p90 <= budget,
            "latency_budget",
            f"{deployed} p90 {p90:.3f} ms > budget {budget:g} ms ({latency[deployed].where})",
        )
        if deployed == "student_int8" and not int8_must_pay:
            gates.skipped.append("int8_pays: not required (--allow-slower-int8)")
        elif deployed == "student_int8":
            fp32 = latency["student_fp32"].p90
            gates.check(
                p90 < fp32,
                "int8_pays",
                f"student_int8 p90 {p90:.3f} ms is not faster than its float twin student_fp32 "
                f"({fp32:.3f} ms) on {latency[deployed].where}: INT8 costs accuracy and buys nothing "
                "(--keep-float auto keeps the layers whose INT8 kernels are slower in float)",
            )
    else:
        gates.skipped.append(
            f"latency_budget: {target.name} was not measured on the device itself; "
            "the latencies here are from this host"
        )
        if deployed == "student_int8":
            gates.skipped.append(
                f"int8_pays: INT8 vs float speed is a property of {target.name}'s runtime; "
                "this host's says nothing about it"
            )
    return gates
