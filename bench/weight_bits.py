#!/usr/bin/env python
"""8-bit vs 7-bit int8 weights on this CPU: does ONNX Runtime's u8s8 arithmetic saturate?

For one finished run (default: the bundled example, ``edgekd compress --out runs/example``),
re-quantize its distilled student with 8-bit and with 7-bit weights (same calibration, same QAT
epochs and losses as the run), export both, and measure each INT8 model's validation accuracy
twice with ONNX Runtime on the CPU: with all graph optimizations (QLinearConv/QGemm, the integer
kernels a deployment runs) and with none (DequantizeLinear -> float Conv -> QuantizeLinear: the
arithmetic the Q/DQ graph defines, without integer kernels). On an x86-64 CPU without VNNI the
gap between the two is the saturation of vpmaddubsw's int16 pair sums.

Usage: python bench/weight_bits.py [RUN] [--out bench-out/weight-bits]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
from quant_table import edgekd_row

from edgekd.device.fingerprint import cpu_model, x86_int8_dot
from edgekd.pipeline import Context
from edgekd.run import RunDir
from edgekd.validate import accuracy

LEVELS = {
    "integer kernels": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "Q/DQ reference": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
}


def predict(path: Path, x: np.ndarray, level: ort.GraphOptimizationLevel) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = level
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: b})[0] for b in np.array_split(x, 8)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, nargs="?", default=Path("runs/example"))
    p.add_argument("--out", type=Path, default=Path("bench-out/weight-bits"))
    args = p.parse_args()
    ctx = Context(RunDir(args.run).config(), RunDir(args.run))
    x, labels = ctx.data.val.x.numpy(), ctx.data.val.y.numpy()
    rows = {"fp32": {"Q/DQ reference": accuracy(predict(
        args.run / "student_fp32.onnx", x, LEVELS["Q/DQ reference"]), labels)}}  # fmt: skip
    for bits in (8, 7):
        model = edgekd_row(args.run, args.out / f"w{bits}", weight_bits=bits)
        rows[f"int8, {bits}-bit weights"] = {
            how: accuracy(predict(model, x, level), labels) for how, level in LEVELS.items()
        }
    lines = [
        "| model | accuracy, integer kernels % | accuracy, Q/DQ reference % |",
        "|---|---:|---:|",
    ]
    for name, r in rows.items():
        cells = [f"{100 * r[k]:.2f}" if k in r else "—" for k in LEVELS]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    lines.append(
        f"\n{len(labels):,} validation samples of {args.run}; onnxruntime {ort.__version__} "
        f"CPUExecutionProvider on {cpu_model()} (int8 dot product: "
        f"{x86_int8_dot() or 'not x86-64'})"
    )
    md = "\n".join(lines)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(md + "\n")
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))
    print(md)


if __name__ == "__main__":
    main()
