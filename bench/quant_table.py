#!/usr/bin/env python
"""INT8 routes side by side on full Fashion-MNIST, one student, one run: the quantization table in
docs/benchmarks.md.

Rows: the float student (fp32); ONNX Runtime's own ``quantize_static`` PTQ (QDQ, per-channel int8
weights, uint8 activations) with its MinMax, Entropy and Percentile calibrators; edgekd PTQ with
each of its calibrators; edgekd QAT (labels only); QAT + kd; QAT + kd + ``--keep-float auto``.
All INT8 rows start from the same float student (edgekd ``distill`` stage with kd, bundled
FashionCNN teacher, the student edgekd sizes for the target unless ``--student``) and use the
same 512 calibration images. Columns: test accuracy on the 10k test images, top-1 agreement with
the teacher, ONNX Runtime CPU p90 latency at batch 1 (the target's latency method; host-cpu: 50
warm-up, >= 1024 queries and >= 5 s per model, default intra-op threads), as the median of
interleaved rounds, the int8 / fp32 p90 ratio, and the file size. Rows already built are reused:
delete a row's folder under --out to rebuild it.

Usage: python bench/quant_table.py [--target host-cpu] [--student SPEC] [--epochs 4]
                                   [--qat-epochs 1] [--rounds 3] [--ptq-only] [--out DIR]
                                   [--threads 2] [--weight-bits 7|8]

``--weight-bits`` (default: edgekd's choice for the target on this machine, 7 on an x86-64 CPU
without VNNI) applies to the edgekd rows and, as ``reduce_range``, to ONNX Runtime's rows; the
INT8 rows of each setting go in their own folders, next to one shared float student.

With ``--target`` of another scheme (e.g. a Jetson: tensorrt), the INT8 models are that scheme's,
still run by ONNX Runtime on this CPU: accuracy is that of the scheme's arithmetic; latency then
says nothing about the device.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

from edgekd.config import EXAMPLE_MEAN, EXAMPLE_STD, EXAMPLE_TEACHER, CompressConfig
from edgekd.device.fingerprint import x86_int8_dot
from edgekd.pipeline import Context, open_run, run_in, run_stage
from edgekd.quant.calibrators import CALIBRATORS
from edgekd.run import RunDir
from edgekd.runners.ort_runner import OrtRunner
from edgekd.validate import accuracy, agreement

FASHION = "/usr/share/datasets/fashion-mnist"
ORT_METHODS = {
    "MinMax": CalibrationMethod.MinMax,
    "Entropy": CalibrationMethod.Entropy,
    "Percentile": CalibrationMethod.Percentile,
}


class _Reader(CalibrationDataReader):
    def __init__(self, x: np.ndarray):
        self.batches = iter([{"input": x[i : i + 1]} for i in range(len(x))])

    def get_next(self) -> dict | None:
        return next(self.batches, None)


def edgekd_row(base: Path, out: Path, **changes) -> Path:
    """Copy the float run, run quantize (with ``changes`` to its config) and export; the INT8
    model's path. A row already exported is reused (delete its folder to redo it)."""
    if (out / "student_int8.onnx").exists():
        return out / "student_int8.onnx"
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(
        base, out, ignore=shutil.ignore_patterns("*.onnx", "*.ort", "student_qat.pt", "quantize*")
    )
    run_stage("quantize", out, changes)
    run_stage("export", out)
    return out / "student_int8.onnx"


def ort_row(fp32: Path, out: Path, method: str, calib: np.ndarray, bits: int) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"ort_{method.lower()}.onnx"
    quantize_static(
        str(fp32), str(path), _Reader(calib), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        calibrate_method=ORT_METHODS[method], reduce_range=bits == 7,
    )  # fmt: skip
    return path


def quality(path: Path, x: np.ndarray, labels: np.ndarray, teacher: np.ndarray) -> dict:
    with OrtRunner(path) as r:
        logits = r.predict(x)
    return {
        "accuracy": accuracy(logits, labels),
        "agreement": agreement(logits, teacher),
        "mb": path.stat().st_size / 1e6,
    }


def latencies(models: dict[str, Path], ctx: Context, rounds: int) -> dict[str, dict]:
    """p90 of each model in ``rounds`` interleaved rounds (every model once per round, so that
    the machine's drifting load falls on all of them alike); the median round is reported."""
    method, sample = ctx.target.latency, ctx.data.val.x[:1].numpy()
    p90s: dict[str, list[float]] = {name: [] for name in models}
    where = ""
    for _ in range(rounds):
        for name, path in models.items():
            with OrtRunner(path, ctx.target.execution_providers, threads=method.threads) as r:
                stats = r.time(sample, warmup=method.warmup, min_queries=method.min_queries,
                               min_duration_s=method.min_duration_s, label=path.name)  # fmt: skip
            p90s[name].append(stats.p90)
            where = stats.where
    return {
        name: {"p90_ms": statistics.median(v), "p90_rounds_ms": v, "where": where}
        for name, v in p90s.items()
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--qat-epochs", type=int, default=1)
    p.add_argument("--data", default=FASHION)
    p.add_argument("--target", default="host-cpu", help="whose INT8 scheme (latency: this host)")
    p.add_argument("--out", type=Path, default=None, help="default: bench-out/quant/TARGET")
    p.add_argument("--threads", type=int, default=2, help="PyTorch threads for training")
    p.add_argument("--rounds", type=int, default=3, help="interleaved latency rounds")
    p.add_argument("--ptq-only", action="store_true", help="skip the QAT rows")
    p.add_argument("--weight-bits", type=int, choices=(7, 8), default=None,
                   help="default: edgekd's choice for the target on this machine")  # fmt: skip
    p.add_argument("--student", default=None, help="default: edgekd's sizing rule for the target")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    args.out = args.out or Path("bench-out/quant") / args.target
    example = resources.files("edgekd.example")
    base = args.out / "float"
    cfg = CompressConfig(
        teacher=EXAMPLE_TEACHER, weights=str(example / "teacher.pt"), data=args.data,
        mean=EXAMPLE_MEAN, std=EXAMPLE_STD, student=args.student, epochs=args.epochs, batch_size=128,
        lr=3e-3, qat_epochs=0, loss="kd", cache_dir=str(args.out / "cache"), target=args.target,
    )  # fmt: skip
    if not (base / "student.pt").exists():
        shutil.rmtree(base, ignore_errors=True)
        run_in(open_run(cfg, base), "distill")
    if not (base / "student_fp32.onnx").exists():  # and teacher.onnx (and a PTQ int8, unused)
        run_stage("quantize", base)
        run_stage("export", base)
    ctx = Context(RunDir(base).config(), RunDir(base))
    bits = args.weight_bits or cfg.resolved().weight_bits
    rows_dir = args.out / f"w{bits}"
    calib = ctx.calibration_inputs().numpy()
    x, labels = ctx.data.val.x.numpy(), ctx.data.val.y.numpy()
    with OrtRunner(base / "teacher.onnx", threads=0) as r:
        teacher = r.predict(x)

    models: dict[str, Path] = {"fp32": base / "student_fp32.onnx"}
    for method in ORT_METHODS:
        models[f"ORT quantize_static {method}"] = ort_row(
            models["fp32"], rows_dir / "ort", method, calib, bits
        )
    for name in CALIBRATORS:
        models[f"edgekd PTQ {name}"] = edgekd_row(
            base, rows_dir / f"ptq-{name}", calibrator=name, qat_epochs=0, weight_bits=bits
        )
    if not args.ptq_only:
        qat = {"qat_epochs": args.qat_epochs, "weight_bits": bits}
        models["edgekd QAT"] = edgekd_row(base, rows_dir / "qat", loss="ce", **qat)
        models["edgekd QAT + kd"] = edgekd_row(base, rows_dir / "qat-kd", loss="kd", **qat)
        models["edgekd QAT + kd + keep-float auto"] = edgekd_row(
            base, rows_dir / "qat-kd-keep", loss="kd", keep_float="auto", **qat
        )

    lat = latencies(models, ctx, args.rounds)
    rows = {
        name: {**quality(path, x, labels, teacher), **lat[name]} for name, path in models.items()
    }
    fp32 = rows["fp32"]["p90_ms"]
    lines = [
        "| model | test accuracy % | agreement with teacher % | ORT CPU p90 ms | p90 / fp32 | MB |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {100 * r['accuracy']:.2f} | {100 * r['agreement']:.2f} "
            f"| {r['p90_ms']:.3f} | {r['p90_ms'] / fp32:.2f} | {r['mb']:.3f} |"
        )
    lines.append(
        f"\nlatency: {rows['fp32']['where']}, batch 1, p90 of >= 1024 queries and >= 5 s, "
        f"median of {args.rounds} interleaved rounds; int8 weights in {bits} bits "
        f"(this CPU's int8 dot product: {x86_int8_dot() or 'not x86-64'})"
    )
    if not args.ptq_only:
        keep = json.loads((rows_dir / "qat-kd-keep" / "logs" / "quantize.json").read_text())
        lines.append(f"keep-float auto kept: {keep['keep_float']['layers'] or 'none'}")
    md = "\n".join(lines)
    (rows_dir / "table.md").write_text(md + "\n")
    (rows_dir / "results.json").write_text(json.dumps(rows, indent=1))
    print(md)


if __name__ == "__main__":
    main()
