"""``edgekd bench``: single-stream latency of one model, here or on a device over SSH."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.errors import BadInput
from edgekd.runners.latency import environment
from edgekd.runners.remote import RemoteRunner, SshSession, SshTarget
from edgekd.targets import Target
from edgekd.validate import make_runner, placed


def sample_input(model: Path, batch: int) -> np.ndarray:
    """A fixed random float32 query for ``model``'s first input, with a dynamic batch of ``batch``."""
    from edgekd.export.lint import load_onnx

    proto = load_onnx(model)
    initializers = {t.name for t in proto.graph.initializer}
    inputs = [v for v in proto.graph.input if v.name not in initializers]
    if not inputs:
        raise BadInput(f"{model}: the model has no inputs")
    first = inputs[0].type.tensor_type
    if first.elem_type != 1:  # TensorProto.FLOAT
        raise BadInput(f"{model}: bench feeds float32 inputs; input {inputs[0].name!r} is not")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in first.shape.dim]
    if dims and dims[0] is None:
        dims[0] = batch
    if None in dims:
        raise BadInput(
            f"{model}: input {inputs[0].name!r} has a dynamic axis other than the batch: "
            "export with a fixed input size"
        )
    return np.random.default_rng(0).standard_normal(dims, dtype=np.float32)


def bench(model: str | Path, target: Target, remote: SshTarget | None = None) -> dict[str, Any]:
    """Latency of ``model`` with ``target``'s latency method and runtime; on ``remote`` if given."""
    model = Path(model)
    if not model.is_file():
        raise BadInput(f"{model}: no such model file")
    method = target.latency
    x = sample_input(model, method.batch)
    with SshSession(remote, [target.runtime]) if remote else nullcontext() as session:
        with make_runner(model, target, session) as runner:
            lat = runner.time(
                x,
                warmup=method.warmup,
                min_queries=method.min_queries,
                min_duration_s=method.min_duration_s,
                label=f"latency {model.name}",
            )
        env = session.fingerprint() if session else environment()
    lat = placed(lat, target, runner)
    summary = {
        "model": str(model),
        "target": target.name,
        "batch": method.batch,
        "latency_ms": lat.to_dict(),
        "environment": env,
    }
    if isinstance(runner, RemoteRunner) and runner.engine is not None:
        summary["engine"] = runner.engine
    return summary
