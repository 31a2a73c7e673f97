"""The mixed-precision plan: which quantizable layers to keep in float because their integer
version is slower on the target's runtime, measured there.

ONNX Runtime's profiler times every node of the INT8 and the fp32 model (as deployed, after its
graph optimizations); each node is charged to the layer it computes or, for Q/DQ, layout and float
ops between layers, to the layer it feeds. The layers whose INT8 cost (kernel plus what it brings
along) exceeds their fp32 cost are the candidates to keep in float. Per-node times do not add up
to a model's latency (caches, reorders at precision boundaries), so each candidate mix is then
exported and timed whole, side by side with the fp32 model in interleaved rounds; the fastest mix
ships. Only runtimes on this machine can be measured: elsewhere the plan uses accuracy alone.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from torch import nn

from edgekd.device.ort import session_options
from edgekd.export.onnx_export import export_onnx
from edgekd.quant.coverage import INTEGER_KERNELS, match_kernels, optimized_graph, ort_coverage
from edgekd.quant.prepare import freeze, quantizable_layers
from edgekd.quant.scheme import QuantScheme
from edgekd.quant.sensitivity import Probe, ptq
from edgekd.roofline import is_compute
from edgekd.runners.ort_runner import OrtRunner
from edgekd.targets import Target
from edgekd.validate import time_interleaved

PROFILE_WARMUP = 10  # untimed runs before the profiled ones
PROFILE_RUNS = 50  # profiled runs; each node's median is kept
PERCENTILE = 90  # the latency the mixes are compared on (the int8_pays gate's)
# Timing of the mixes, per model over all rounds: more rounds than validation's, so that a burst
# of load on a shared machine falls on every model alike
PLAN_ROUNDS = 6
PLAN_QUERIES = 6 * 64
PLAN_SECONDS = 2.0


def node_times(
    path: str | Path,
    sample: np.ndarray,
    threads: int,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    runs: int = PROFILE_RUNS,
) -> dict[str, float]:
    """Median time (µs) of every node ONNX Runtime runs for ``path``, by node name in the
    optimized graph, from its profiler over ``runs`` queries after PROFILE_WARMUP."""
    with tempfile.TemporaryDirectory() as tmp:
        opts = session_options(threads)
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(str(path), opts, providers=list(providers))
        feed = {session.get_inputs()[0].name: np.ascontiguousarray(sample, np.float32)}
        for _ in range(PROFILE_WARMUP + runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    durations: dict[str, list[float]] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            durations.setdefault(e["name"].removesuffix("_kernel_time"), []).append(e["dur"])
    return {name: statistics.median(d[-runs:]) for name, d in durations.items()}


def _charged(optimized: onnx.ModelProto, kernels: dict[str, str]) -> dict[str, str]:
    """Every node of ``optimized`` (by name) → the layer its time is charged to: a kernel's own
    layer; for another node, the layer of the first kernel downstream of it (the one it feeds), or
    upstream for the nodes after the last kernel."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in optimized.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    charged: dict[str, str] = {}
    last = None
    for node in reversed(optimized.graph.node):  # reverse topological: consumers come first
        if node.name in kernels:
            charged[node.name] = kernels[node.name]
            continue
        users = [u for out in node.output for u in consumers.get(out, []) if u.name in charged]
        if users:
            charged[node.name] = charged[users[0].name]
    for node in optimized.graph.node:
        if node.name in kernels:
            last = kernels[node.name]
        elif node.name not in charged and last is not None:
            charged[node.name] = last
    return charged


def layer_costs(
    path: str | Path, sample: np.ndarray, threads: int, providers: Sequence[str]
) -> dict[str, Any]:
    """Per compute layer of the model at ``path`` (ONNX node name): µs of its kernel, of the
    nodes charged to it, the kernel it runs as; and the µs charged to no layer."""
    model = onnx.load(str(path))
    optimized = optimized_graph(path, threads, providers)
    found = match_kernels(model, optimized)
    kernels = {k.name: layer for layer, k in found.items() if k is not None}
    charged = _charged(optimized, kernels)
    times = node_times(path, sample, threads, providers)
    ops = {n.name: n.op_type for n in optimized.graph.node}
    layers = {
        layer: {"kernel_us": 0.0, "around_us": 0.0, "int8": k is not None and k.op_type in
                INTEGER_KERNELS}
        for layer, k in found.items()
    }  # fmt: skip
    unassigned = 0.0
    for node, us in times.items():
        layer = charged.get(node)
        if layer is None:
            unassigned += us
        elif node in kernels:
            layers[layer]["kernel_us"] += us
        else:
            layers[layer]["around_us"] += us
    around_ops: dict[str, float] = {}
    for node, us in times.items():
        if node not in kernels:
            around_ops[ops.get(node, "?")] = around_ops.get(ops.get(node, "?"), 0.0) + us
    return {"layers": layers, "unassigned_us": unassigned, "around_by_op": around_ops}


def _depthwise(model: onnx.ModelProto) -> set[str]:
    """The grouped convolutions of ``model`` (depthwise and the like), by node name."""
    return {
        n.name
        for n in model.graph.node
        if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute)
    }


def compare_layers(
    int8_path: Path,
    fp32_path: Path,
    modules: Sequence[str],
    sample: np.ndarray,
    threads: int,
    providers: Sequence[str],
) -> dict[str, Any]:
    """Per quantizable layer (``modules``, in execution order): its cost in the INT8 and in the
    fp32 model, both profiled with ONNX Runtime, and whether INT8 is slower."""
    costs = {k: layer_costs(p, sample, threads, providers)
             for k, p in (("int8", int8_path), ("fp32", fp32_path))}  # fmt: skip
    names = {k: [n.name for n in onnx.load(str(p)).graph.node if is_compute(n)]
             for k, p in (("int8", int8_path), ("fp32", fp32_path))}  # fmt: skip
    grouped = _depthwise(onnx.load(str(fp32_path)))
    if not len(names["int8"]) == len(names["fp32"]) == len(modules):
        raise ValueError("the INT8 and fp32 exports do not have one compute node per layer")
    rows = []
    for module, q_name, f_name in zip(modules, names["int8"], names["fp32"], strict=True):
        q, f = costs["int8"]["layers"][q_name], costs["fp32"]["layers"][f_name]
        q_us, f_us = q["kernel_us"] + q["around_us"], f["kernel_us"] + f["around_us"]
        rows.append(
            {
                "module": module,
                "depthwise": f_name in grouped,
                "int8_kernel": q["int8"],
                "int8_us": q_us,
                "int8_kernel_us": q["kernel_us"],
                "fp32_us": f_us,
                "fp32_kernel_us": f["kernel_us"],
                "int8_slower": q_us >= f_us,
            }
        )
    return {
        "layers": rows,
        "around_by_op_us": {k: c["around_by_op"] for k, c in costs.items()},
    }


def why_no_faster_mix(comparison: dict[str, Any]) -> str:
    """Why integer arithmetic does not pay here, in the profiler's measured terms."""
    rows = comparison["layers"]

    def total(key: str, depthwise: bool | None = None) -> float:
        return sum(r[key] for r in rows if depthwise is None or r["depthwise"] == depthwise) / 1e3

    around = comparison["around_by_op_us"]["int8"]
    top = sorted(around.items(), key=lambda kv: -kv[1])[:3]
    parts = [
        f"integer kernels {total('int8_kernel_us'):.3f} ms vs float {total('fp32_kernel_us'):.3f} "
        "ms for the same layers"
    ]
    if any(r["depthwise"] for r in rows):
        parts.append(
            f"depthwise/grouped convs {total('int8_kernel_us', True):.3f} vs "
            f"{total('fp32_kernel_us', True):.3f} ms"
        )
    parts.append(
        "the INT8 model's other nodes ("
        + ", ".join(f"{op} {us / 1e3:.3f} ms" for op, us in top)
        + f") vs {sum(comparison['around_by_op_us']['fp32'].values()) / 1e3:.3f} ms of other "
        "nodes in the float model"
    )
    return "; ".join(parts)


def plan_mix(
    export: Callable[[Sequence[str], Path], None],
    fp32_path: Path,
    modules: Sequence[str],
    keep_for_accuracy: Sequence[str],
    sample: np.ndarray,
    target: Target,
) -> dict[str, Any]:
    """Choose the layers to keep in float for speed, measured on this machine's ONNX Runtime.

    ``export(keep_float, path)`` writes the INT8 ONNX model with those layers in float (calibrated
    PTQ); ``keep_for_accuracy`` stay float in every mix. Timed whole beside ``fp32_path`` in
    interleaved rounds: the all-INT8 model, the mix that keeps in float the layers whose integer
    kernel the profiler finds slower ("kernels"), and the one that also counts the Q/DQ and float
    ops around each layer ("profiled"); the fastest ships, and where none beats fp32 the record
    says why. A mix that would keep every layer in float is not one. Each mix records its INT8
    MAC coverage and the kept layers the runtime runs in INT8 all the same (ONNX Runtime
    quantizes a float Conv's weights itself when a DequantizeLinear feeds it and a QuantizeLinear
    follows).
    """
    threads = target.latency.threads
    providers = target.execution_providers
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"all_int8": Path(tmp) / "all_int8.onnx"}
        export(keep_for_accuracy, paths["all_int8"])
        comparison = compare_layers(
            paths["all_int8"], fp32_path, modules, sample, threads, providers
        )
        rows = comparison["layers"]
        mixes = {"all_int8": list(keep_for_accuracy)}
        for name, slower in (
            ("kernels", {r["module"] for r in rows if r["int8_kernel_us"] >= r["fp32_kernel_us"]}),
            ("profiled", {r["module"] for r in rows if r["int8_slower"]}),
        ):
            mix = [m for m in modules if m in slower or m in keep_for_accuracy]
            if len(mix) < len(modules) and mix not in mixes.values():
                mixes[name] = mix
                paths[name] = Path(tmp) / f"{name}.onnx"
                export(mix, paths[name])
        with ExitStack() as stack:
            runners = {
                name: stack.enter_context(OrtRunner(p, providers, threads))
                for name, p in {"fp32": fp32_path, **paths}.items()
            }
            latency = time_interleaved(
                runners,
                sample,
                warmup=target.latency.warmup,
                queries=PLAN_QUERIES,
                seconds=PLAN_SECONDS,
                label="plan",
                rounds=PLAN_ROUNDS,
            )
        coverage = {
            name: ort_coverage(path, threads, providers, modules) for name, path in paths.items()
        }
    p90 = {name: float(np.percentile(s.times, PERCENTILE)) for name, s in latency.items()}
    chosen = min(mixes, key=lambda name: p90[name])
    record: dict[str, Any] = {
        "measured": True,
        "where": latency["fp32"].where,
        "threads": threads,
        "percentile": PERCENTILE,
        "rounds": PLAN_ROUNDS,
        "queries": {name: s.n for name, s in latency.items()},
        "fp32_p90_ms": p90["fp32"],
        "mixes": [
            {
                "name": name,
                "keep_float": layers,
                "p90_ms": p90[name],
                "vs_fp32": p90[name] / p90["fp32"],
                "int8_fraction": coverage[name]["int8_fraction"],
                "runtime_int8": [
                    r["module"]
                    for r in coverage[name]["per_layer"]
                    if r["int8"] and r["module"] in layers
                ],
            }
            for name, layers in mixes.items()
        ],  # fmt: skip
        "chosen": chosen,
        "layers": mixes[chosen],
        "profile": comparison,
    }
    if p90[chosen] >= p90["fp32"]:
        record["why_not_faster"] = (
            f"no mix measured faster than fp32 (best {chosen} {p90[chosen]:.3f} ms vs "
            f"{p90['fp32']:.3f} ms p90): " + why_no_faster_mix(comparison)
        )
    return record


def accuracy_only(target: Target) -> dict[str, Any]:
    """The plan's record where the target's runtime cannot be measured on this machine."""
    return {
        "measured": False,
        "why": f"{target.name} runs {target.runtime} on another device ({target.family}); "
        "INT8 vs float speed is a property of that runtime, so only accuracy chose the "
        "float layers",
    }


def measurable(target: Target) -> bool:
    """Whether this machine runs ``target``'s runtime: host targets on ONNX Runtime."""
    return target.family == "host" and target.runtime == "onnxruntime"


def speed_plan(
    student: nn.Module,
    scheme: QuantScheme,
    calibrator: str,
    probe: Probe,
    keep_for_accuracy: Sequence[str],
    target: Target,
) -> dict[str, Any]:
    """:func:`plan_mix` for ``student`` quantized after training (calibrated on ``probe``), or
    the accuracy-only record where ``target``'s runtime is not on this machine."""
    if not measurable(target):
        return accuracy_only(target)
    sample = probe.x[: target.latency.batch]

    def export(keep: Sequence[str], path: Path) -> None:
        qmodel = ptq(student, scheme, calibrator, probe, set(keep))
        freeze(qmodel)
        export_onnx(qmodel.eval(), sample, path, scheme=scheme)

    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        export_onnx(student.eval(), sample, fp32)
        return plan_mix(
            export, fp32, quantizable_layers(student), keep_for_accuracy, sample.numpy(), target
        )
