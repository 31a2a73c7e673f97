"""Accuracy and latency of the exported models on the runtime, and the gates that decide."""

from __future__ import annotations

import importlib.util
import math
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.data import Split
from edgekd.report.gates import Gates, accuracy_evidence, int8_evidence, latency_evidence
from edgekd.runners.base import Runner
from edgekd.runners.latency import LatencyStats, stats
from edgekd.runners.ort_runner import OrtRunner
from edgekd.runners.remote import RemoteRunner, SshSession, remote_runner
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
    TensorRT target's models run in ONNX Runtime, and their latency says "this host"
    (:func:`placed`)."""
    if session is not None:
        return remote_runner(path, target, session, keep_dir)
    if target.runtime == "tensorrt" and importlib.util.find_spec("tensorrt") is not None:
        return TrtRunner(path, target, keep_dir)
    return OrtRunner(path, target.execution_providers, threads=target.latency.threads)


def measured_on_target(target: Target, runner: Runner) -> bool:
    """Whether ``runner`` measures on ``target`` itself: this machine for a host target, the
    device over SSH, or the target's own TensorRT engine built and run here (edgekd running on
    the device)."""
    return target.family == "host" or isinstance(runner, RemoteRunner | TrtRunner)


def placed(latency: LatencyStats, target: Target, runner: Runner) -> LatencyStats:
    """``latency`` marked with whether ``runner`` measured it on ``target``; figures from this
    host standing in for another target also say so in ``where``."""
    if measured_on_target(target, runner):
        return replace(latency, on_target=True)
    return replace(
        latency, on_target=False, where=f"{latency.where} (this host, not {target.name})"
    )


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
    latency = {name: placed(s, target, runners[name]) for name, s in latency.items()}
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


def gate(
    target: Target,
    accuracy_: dict[str, float | None],
    latency: dict[str, LatencyStats],
    deployed: str,
    max_accuracy_drop: float,
    int8_must_pay: bool = True,
) -> Gates:
    """Accuracy drop of the deployed model vs the teacher; its p90 vs the target's budget; an INT8
    model must be faster than its float twin on the same runtime. The latency gates are checked
    only where the latencies were measured on the target itself (:func:`placed`)."""
    gates = Gates()
    on_target = bool(latency[deployed].on_target)
    teacher, student = accuracy_["teacher"], accuracy_[deployed]
    assert teacher is not None and student is not None
    gates.check(
        100 * (teacher - student) <= max_accuracy_drop,
        "accuracy_drop",
        accuracy_evidence(deployed, student, teacher, max_accuracy_drop),
        on_target,
    )
    budget = target.budgets.p90_latency_ms
    if on_target:
        p90 = latency[deployed].p90
        gates.check(p90 <= budget, "latency_budget", latency_evidence(deployed, p90, budget), True)
        if deployed == "student_int8" and not int8_must_pay:
            gates.skip("int8_pays", "not required (--allow-slower-int8)", True)
        elif deployed == "student_int8":
            fp32 = latency["student_fp32"].p90
            gates.check(p90 < fp32, "int8_pays", int8_evidence(p90, fp32), True)
    else:
        gates.skip(
            "latency_budget",
            f"{target.name} was not measured on the device itself; "
            "the latencies here are from this host",
            False,
        )
        if deployed == "student_int8":
            gates.skip(
                "int8_pays",
                f"INT8 vs float speed is a property of {target.name}'s runtime; "
                "this host's says nothing about it",
                False,
            )
    return gates
