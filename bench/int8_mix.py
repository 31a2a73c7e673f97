#!/usr/bin/env python
"""fp32 vs all-INT8 vs the mixed-precision plan's mix, on ONNX Runtime CPU, for corpus models.

Each model is built with random weights (``pretrained=False``) and its BatchNorm statistics
calibrated on random 96x96 RGB inputs (so that activations have realistic ranges), quantized
post-training with the onnxruntime scheme, and planned by ``edgekd.quant.mixed.speed_plan``
(the ``--keep-float auto`` path on host targets). Then the three models are timed again, side by
side in interleaved rounds (``edgekd.validate.time_interleaved``), fresh from the plan's own
timing so that the choice is not graded by the measurement that made it; p90 in ms. INT8 MAC
coverage: the share of multiply-accumulates ONNX Runtime runs in integer kernels after its graph
optimizations (``edgekd.quant.coverage.ort_coverage``).

Usage: python bench/int8_mix.py [--models mobilenet_v2,efficientnet_lite0,resnet18]
       [--size 96] [--threads 1] [--queries 900]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgekd.export.onnx_export import export_onnx
from edgekd.quant.coverage import ort_coverage
from edgekd.quant.mixed import speed_plan
from edgekd.quant.prepare import freeze, quantizable_layers
from edgekd.quant.scheme import get_scheme
from edgekd.quant.sensitivity import Probe, ptq
from edgekd.runners.ort_runner import OrtRunner
from edgekd.targets import load_target
from edgekd.validate import time_interleaved

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
import corpus  # noqa: E402

SCHEME = get_scheme("onnxruntime")
ROUNDS = 9  # interleaved rounds: on a shared machine, a burst of load falls on every model alike


@torch.no_grad()
def bn_calibrated(name: str, size: int) -> nn.Module:
    """``name`` with random weights and BatchNorm running statistics of random inputs."""
    torch.manual_seed(0)
    model = corpus.build(name)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the batches below
    model.train()
    for _ in range(8):
        model(torch.rand(16, 3, size, size))
    return model.eval()


def bench(name: str, size: int, threads: int, queries: int) -> dict:
    target = load_target("host-cpu")
    target = dataclasses.replace(
        target, latency=dataclasses.replace(target.latency, threads=threads)
    )
    student = bn_calibrated(name, size)
    x = torch.rand(64, 3, size, size)
    probe = Probe(x, x[:1], torch.zeros(1, dtype=torch.long), torch.zeros(1, 10))
    plan = speed_plan(student, SCHEME, SCHEME.calibrator, probe, [], target)
    layers = quantizable_layers(student)
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"fp32": Path(tmp) / "fp32.onnx", "all_int8": Path(tmp) / "int8.onnx",
                 "mix": Path(tmp) / "mix.onnx"}  # fmt: skip
        export_onnx(student, x[:1], paths["fp32"])
        for key, keep in (("all_int8", []), ("mix", plan["layers"])):
            q = ptq(student, SCHEME, SCHEME.calibrator, probe, set(keep))
            freeze(q)
            export_onnx(q.eval(), x[:1], paths[key], scheme=SCHEME)
        coverage = {k: ort_coverage(paths[k], threads, modules=layers)["int8_fraction"]
                    for k in ("all_int8", "mix")}  # fmt: skip
        with ExitStack() as stack:
            runners = {
                k: stack.enter_context(OrtRunner(p, threads=threads)) for k, p in paths.items()
            }
            latency = time_interleaved(
                runners, x[:1].numpy(), warmup=50, queries=queries, seconds=6.0, label=name,
                rounds=ROUNDS,
            )  # fmt: skip
    p90 = {k: float(np.percentile(s.times, 90)) for k, s in latency.items()}
    return {"plan": plan, "p90": p90, "coverage": coverage, "layers": len(layers),
            "where": latency["fp32"].where}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="mobilenet_v2,efficientnet_lite0,resnet18")
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--queries", type=int, default=900, help="timed queries per model, all rounds")
    args = p.parse_args()
    rows = []
    for name in args.models.split(","):
        r = bench(name, args.size, args.threads, args.queries)
        rows.append((name, r))
        plan, p90 = r["plan"], r["p90"]
        print(f"# {name}: plan timed " + ", ".join(
            f"{m['name']} {m['p90_ms']:.3f} ms ({len(m['keep_float'])} kept float, "
            f"{len(m['runtime_int8'])} of them INT8 in ORT)" for m in plan["mixes"]
        ) + f" vs fp32 {plan['fp32_p90_ms']:.3f} ms; chose {plan['chosen']}", flush=True)  # fmt: skip
        if "why_not_faster" in plan:
            print(f"#   {plan['why_not_faster']}", flush=True)
    print(f"\n{rows[0][1]['where']}; {args.size}x{args.size} RGB, batch 1, p90 over "
          f"{args.queries}+ queries in {ROUNDS} interleaved rounds\n")  # fmt: skip
    print(
        "| model | fp32 p90 ms | all-INT8 p90 ms | mix p90 ms | mix / fp32 | float layers "
        "| INT8 MACs all-INT8 | INT8 MACs mix |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in rows:
        p90, cov = r["p90"], r["coverage"]
        print(f"| {name} | {p90['fp32']:.3f} | {p90['all_int8']:.3f} | {p90['mix']:.3f} | "
              f"{p90['mix'] / p90['fp32']:.2f} | {len(r['plan']['layers'])}/{r['layers']} | "
              f"{100 * cov['all_int8']:.1f} % | {100 * cov['mix']:.1f} % |")  # fmt: skip


if __name__ == "__main__":
    main()
