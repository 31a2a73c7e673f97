"""edgekd's device-side command: run one model on this machine, time it, fingerprint the machine.

``edgekd validate/bench --remote`` ships this package to the device as one zipapp and runs it
with the device's Python (>= 3.8, as on JetPack 5). It needs only numpy plus onnxruntime
(``--runtime onnxruntime``) or tensorrt >= 8.5 with the CUDA runtime library (``--runtime
tensorrt``: an ``.onnx`` model is built into an engine here, on the device, as engines are tied to
the GPU and the TensorRT version)::

    python3 edgekd_device.pyz fingerprint
    python3 edgekd_device.pyz run MODEL --input X.npy --result R.json [--logits L.npy]
        [--latency --warmup N --min-queries N --min-duration S --batch N]
        [--runtime onnxruntime|tensorrt] [--providers P,P] [--threads N] [--build-config B.json]

Exit status: 0 ok, 1 failure, 2 the model or input cannot be used, 3 a required module, library
or execution provider is missing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

from .batching import PREDICT_BATCH
from .errors import BuildFailed, Missing, Unusable, first_line
from .fingerprint import RUNTIMES, fingerprint
from .latency import MIN_QUERIES, measure, summarize


def _tensorrt_model(path: str, build_config: dict[str, Any] | None) -> tuple[Any, dict | None]:
    """A TensorRT engine of ``path`` (an ``.engine``, or an ``.onnx`` built here once per session,
    leaving the files of :func:`~.trt.engine_files` next to it); (the model, the build's facts)."""
    from .trt import TrtModel, build_engine, engine_files

    build = None
    if path.endswith(".onnx"):
        files = engine_files(path[: -len(".onnx")])
        if not os.path.isfile(files["engine"]):
            if build_config is None:
                raise Unusable("an .onnx model for TensorRT needs --build-config")
            try:
                built = build_engine(path, build_config)
            except BuildFailed as e:
                Path(files["build_log"]).write_text(e.log)
                raise
            Path(files["engine"]).write_bytes(built.plan)
            Path(files["build_log"]).write_text(built.log)
            Path(files["layers"]).write_text(json.dumps(built.layers))
            build = {
                "tensorrt": built.tensorrt,
                "strongly_typed": built.config["strongly_typed"],
                "build_seconds": built.seconds,
                "engine": os.path.basename(files["engine"]),
                "log": os.path.basename(files["build_log"]),
                "layers": os.path.basename(files["layers"]),
            }
        path = files["engine"]
    plan = Path(path).read_bytes()
    compatible = bool(build_config and build_config.get("version_compatible"))
    return TrtModel(plan, compatible, os.path.basename(path)), build


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Load the model, then predict and/or time as asked; the result as a dict."""
    module = RUNTIMES[args.runtime]
    if importlib.util.find_spec(module) is None:
        raise Missing(f"python module {module} is not installed ({sys.executable})")
    try:
        x = np.load(args.input, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise Unusable(f"{args.input}: not a readable .npy array ({e})") from None
    build_config = json.loads(Path(args.build_config).read_text()) if args.build_config else None
    engine = None
    if args.runtime == "tensorrt":
        model, engine = _tensorrt_model(args.model, build_config)
    else:
        from .ort import OrtSession

        model = OrtSession(args.model, args.providers.split(","), args.threads)
    try:
        result: dict[str, Any] = model.describe()
        if args.runtime == "tensorrt":
            result["engine"] = engine
        if args.logits:
            np.save(args.logits, model.predict(x, args.predict_batch))
            result["logits"] = os.path.basename(args.logits)
        if args.latency:
            times = measure(
                model.timed(x[: args.batch]), args.warmup, args.min_queries, args.min_duration
            )
            result["latency"] = summarize(times)
            result["times_ms"] = times
    finally:
        model.close()
    result["environment"] = fingerprint()
    return result


def _exit_on_eof() -> None:
    """Stop the process once stdin reaches end of file: the SSH client that ran it is gone."""
    while os.read(0, 4096):  # the raw descriptor: a buffered reader's lock would stall shutdown
        pass
    os._exit(1)  # no message: stderr went with the host


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgekd-device", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fingerprint", help="print this machine's fingerprint as JSON")
    r = sub.add_parser("run", help="predict and/or time one model; write the result as JSON")
    r.add_argument("model")
    r.add_argument("--input", required=True, help=".npy batch (float32, NCHW)")
    r.add_argument("--result", required=True, help="where to write the result JSON")
    r.add_argument("--logits", help="write the logits of every input row here (.npy)")
    r.add_argument("--latency", action="store_true", help="time single queries of the input")
    r.add_argument("--warmup", type=int, default=0)
    r.add_argument("--min-queries", type=int, default=MIN_QUERIES)
    r.add_argument("--min-duration", type=float, default=0.0)
    r.add_argument("--batch", type=int, default=1, help="rows of the input per timed query")
    r.add_argument("--runtime", choices=sorted(RUNTIMES), default="onnxruntime")
    r.add_argument("--providers", default="CPUExecutionProvider")
    r.add_argument("--threads", type=int, default=0)
    r.add_argument("--predict-batch", type=int, default=PREDICT_BATCH)
    r.add_argument("--build-config", help="JSON engine build settings (TensorRT, .onnx models)")
    r.add_argument(
        "--exit-on-eof", action="store_true", help="stop when stdin closes (the host went away)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command in ``argv``; the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "fingerprint":
            print(json.dumps(fingerprint()))
            return 0
        if args.exit_on_eof:
            threading.Thread(target=_exit_on_eof, daemon=True).start()
        if args.latency and args.min_queries < MIN_QUERIES:
            raise Unusable(f"--min-queries must be at least {MIN_QUERIES} (MLPerf single stream)")
        result = run(args)
        Path(args.result).write_text(json.dumps(result))
        return 0
    except (Unusable, Missing) as e:
        code, message = e.exit_code, str(e)
    except Exception as e:  # noqa: BLE001 - one line back to the host, whatever failed
        code, message = 1, f"{type(e).__name__}: {first_line(e)}"
    print(f"edgekd-device: error: {message}", file=sys.stderr)
    return code
