#!/usr/bin/env python
"""ONNX Runtime's fixed costs on this CPU: per inference and per layer, for targets/host-cpu.toml.

Chains of N 1x1 convolutions on a 1x8x4x4 tensor (about 1k MACs each, so compute is negligible)
are timed at batch 1, one query at a time, for N in 1, 32, 64, 128; a least-squares line through
the medians gives the intercept (per-inference overhead: the Python call, input/output binding,
the executor) and the slope (per-layer overhead: one operator dispatch). Float and Q/DQ (fused by
ONNX Runtime into QLinearConv) chains, full graph optimizations, as validation runs them.

Usage: python bench/overhead.py [--queries 2000] [--threads 0]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

CHANNELS, SIZE = 8, 4


def chain(n: int, quantized: bool) -> bytes:
    """``n`` 1x1 convolutions in a row; with ``quantized``, Q/DQ around each (u8 activations,
    s8 weights), the pattern ONNX Runtime fuses into QLinearConv."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(np.array(0.05, np.float32), "s"),
        numpy_helper.from_array(np.array(128, np.uint8), "z"),
        numpy_helper.from_array(np.array(0.01, np.float32), "ws"),
        numpy_helper.from_array(np.array(0, np.int8), "wz"),
    ]
    nodes, prev = [], "x"
    for i in range(n):
        w = (rng.standard_normal((CHANNELS, CHANNELS, 1, 1)) * 0.3).astype(np.float32)
        if quantized:
            q = np.clip(np.round(w / 0.01), -127, 127).astype(np.int8)
            inits.append(numpy_helper.from_array(q, f"wq{i}"))
            nodes += [
                helper.make_node("QuantizeLinear", [prev, "s", "z"], [f"q{i}"]),
                helper.make_node("DequantizeLinear", [f"q{i}", "s", "z"], [f"dq{i}"]),
                helper.make_node("DequantizeLinear", [f"wq{i}", "ws", "wz"], [f"w{i}"]),
                helper.make_node("Conv", [f"dq{i}", f"w{i}"], [f"y{i}"]),
            ]
        else:
            inits.append(numpy_helper.from_array(w, f"w{i}"))
            nodes.append(helper.make_node("Conv", [prev, f"w{i}"], [f"y{i}"]))
        prev = f"y{i}"
    if quantized:  # the last conv's output is quantized too, so that every conv fuses
        nodes += [
            helper.make_node("QuantizeLinear", [prev, "s", "z"], ["qo"]),
            helper.make_node("DequantizeLinear", ["qo", "s", "z"], ["out"]),
        ]
        prev = "out"
    shape = [1, CHANNELS, SIZE, SIZE]
    graph = helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, shape)], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def median_us(model: bytes, threads: int, queries: int) -> float:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3  # the fused chains leave unused scale initializers: not news
    session = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    feed = {"x": np.zeros((1, CHANNELS, SIZE, SIZE), np.float32)}
    for _ in range(queries // 10):
        session.run(None, feed)
    times = []
    for _ in range(queries):
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads; 0: default")
    args = parser.parse_args()
    rows = {}
    for quantized in (False, True):
        ns = [1, 32, 64, 128]
        ts = [median_us(chain(n, quantized), args.threads, args.queries) for n in ns]
        slope, intercept = np.polyfit(ns, ts, 1)
        rows["int8" if quantized else "fp32"] = {
            "layers": ns,
            "median_us": [round(t, 1) for t in ts],
            "per_inference_us": round(float(intercept), 1),
            "per_layer_us": round(float(slope), 2),
        }
    print(json.dumps({"measured": f"ONNX Runtime {ort.__version__} CPU, threads={args.threads}",
                      **rows}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
