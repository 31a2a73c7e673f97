"""The checks behind ``bench/gpu_smoke.sh``: one subcommand per step of the GPU smoke test.

    python bench/gpu_smoke.py preflight       one line and exit 1 when this is no CUDA machine
    python bench/gpu_smoke.py STEP OUT        STEP: env, train, distill-live, ddp, ort-cuda,
                                              tensorrt-build, tensorrt-run, pytest

Each step prints what it runs and finds, writes ``OUT/STEP.json`` and ends with one line
``VERDICT PASS|FAIL|SKIP: reason`` (exit 1 on FAIL, else 0). edgekd commands run with this
interpreter (``python -m edgekd``) from an argument list, never through a shell.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import shlex
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

TARGET = "jetson-orin-nano-8gb"  # TensorRT INT8; its providers: TensorRT, CUDA, CPU
EPOCHS, QAT_EPOCHS = "2", "1"
VAL_ROWS = 512  # validation images the runtimes are compared on
MIN_AGREEMENT = 0.95  # top-1 agreement a GPU runtime must reach with ONNX Runtime CPU
CUDA_EP, CPU_EP = "CUDAExecutionProvider", "CPUExecutionProvider"

Result = tuple[str, str, dict[str, Any]]  # (PASS|FAIL|SKIP, reason, details for OUT/STEP.json)


def first_line(e: BaseException | str) -> str:
    lines = [x.strip() for x in str(e).splitlines() if x.strip()]
    return lines[0] if lines else type(e).__name__


def edgekd(*args: str) -> tuple[int, str]:
    """Run ``python -m edgekd ARGS``: (exit code, stdout); stderr goes straight to the log."""
    print(f"$ edgekd {shlex.join(args)}", flush=True)
    done = subprocess.run(
        [sys.executable, "-m", "edgekd", *args], stdout=subprocess.PIPE, text=True, check=False
    )
    print(done.stdout, end="", flush=True)
    return done.returncode, done.stdout


def edgekd_observed(args: list[str]) -> tuple[int, dict[str, Any]]:
    """Run the edgekd CLI in this process, recording where each training stage and the teacher
    ran and in which dtype the student computed (float16/bfloat16 = autocast active)."""
    import torch

    from edgekd import cli
    from edgekd.pipeline import context, training

    seen: dict[str, Any] = {"fit": [], "teacher": []}
    # patched where the stages look them up
    fit, teacher_outputs, live = training.fit, context.teacher_outputs, context.LiveTeacher

    def observed_fit(student: Any, *a: Any, label: str = "train", **kw: Any) -> Any:
        first: dict[str, str] = {}

        def hook(module: Any, inputs: Any, output: Any) -> None:
            if module.training and not first and isinstance(output, torch.Tensor):
                first.update(device=output.device.type, dtype=str(output.dtype).split(".")[-1])

        handle = student.register_forward_hook(hook)
        try:
            history = fit(student, *a, label=label, **kw)
        finally:
            handle.remove()
        losses = [r["loss"] for r in history]
        seen["fit"].append({"stage": label, **first, "losses": losses})
        return history

    def observed_teacher_outputs(*a: Any, **kw: Any) -> Any:
        seen["teacher"].append(f"cached outputs, computed on {kw.get('device')} on a miss")
        return teacher_outputs(*a, **kw)

    class ObservedLive(live):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            seen["teacher"].append("live on " + ", ".join(str(d) for d in self.devices))

    training.fit, context.teacher_outputs, context.LiveTeacher = (
        observed_fit,
        observed_teacher_outputs,
        ObservedLive,
    )
    torch.cuda.reset_peak_memory_stats()
    print(f"$ edgekd {shlex.join(args)}    (in this process, training observed)", flush=True)
    try:
        cli.app(args=args, prog_name="edgekd")
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        training.fit, context.teacher_outputs, context.LiveTeacher = fit, teacher_outputs, live
    seen["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return code, seen


def check_training(code: int, seen: dict[str, Any], what: str, qat: bool) -> Result:
    """The verdict on an observed training run: distillation on CUDA under autocast, QAT on CUDA."""
    if code != 0:
        return "FAIL", f"{what} exited {code} (see the log above)", seen
    stages = {r["stage"]: r for r in seen["fit"]}
    distill = stages.get("distill", {})
    if distill.get("device") != "cuda":
        return "FAIL", f"distillation ran on {distill.get('device', 'nothing')}, not CUDA", seen
    if distill.get("dtype") not in ("float16", "bfloat16"):
        return "FAIL", f"distillation on CUDA computed in {distill.get('dtype')}: AMP off", seen
    if qat and stages.get("qat", {}).get("device") != "cuda":
        return "FAIL", f"QAT ran on {stages.get('qat', {}).get('device', 'nothing')}", seen
    losses = [x for r in seen["fit"] for x in r["losses"]]
    if not losses or not all(math.isfinite(x) for x in losses):
        return "FAIL", f"non-finite or no training loss: {losses}", seen
    parts = [f"distill on cuda with AMP ({distill['dtype']} autocast), loss "
             + " -> ".join(f"{x:.3f}" for x in distill["losses"])]  # fmt: skip
    if qat:
        parts.append(f"QAT on cuda in {stages['qat']['dtype']} (AMP is off for QAT by design)")
    parts.append("teacher " + "; ".join(dict.fromkeys(seen["teacher"])))
    parts.append(f"peak {seen['peak_cuda_mb']} MB on the GPU")
    return "PASS", "; ".join(parts), seen


def val_inputs(run: Path) -> Any:
    """The run's first VAL_ROWS preprocessed validation images (float32 NCHW)."""
    from edgekd.pipeline import Context
    from edgekd.run import RunDir

    rd = RunDir(run)
    return Context(rd.config(), rd).data.val.x[:VAL_ROWS].numpy()


def agreement(a: Any, b: Any) -> float:
    return float((a.argmax(1) == b.argmax(1)).mean())


def need_models(out: Path) -> Path | None:
    run = out / "run"
    return run if (run / "student_int8.onnx").is_file() else None


# --- the steps ---------------------------------------------------------------------------------


def step_env(out: Path) -> Result:
    import platform

    import torch

    info: dict[str, Any] = {"python": f"{platform.python_version()} ({sys.executable})"}
    smi = [
        "nvidia-smi",
        "--format=csv,noheader",
        "--query-gpu=index,name,driver_version,memory.total",
    ]
    done = subprocess.run([*smi[:-1], smi[-1] + ",compute_cap"], capture_output=True, text=True)
    if done.returncode != 0:  # drivers before 510 know no compute_cap
        done = subprocess.run(smi, capture_output=True, text=True)
    info["nvidia-smi"] = done.stdout.strip().splitlines() or [first_line(done.stderr or "failed")]
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    info["torch"] = (
        f"{torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}; "
        f"cuda available {torch.cuda.is_available()}, {len(names)} device(s): {', '.join(names)}; "
        f"bf16 {torch.cuda.is_bf16_supported()}"
    )
    try:
        import onnxruntime as ort

        info["onnxruntime"] = f"{ort.__version__}: {', '.join(ort.get_available_providers())}"
    except Exception as e:  # noqa: BLE001 - report whatever stops the import
        info["onnxruntime"] = f"not importable: {first_line(e)}"
    try:
        import tensorrt

        info["tensorrt"] = tensorrt.__version__
    except Exception as e:  # noqa: BLE001
        info["tensorrt"] = f"not importable: {type(e).__name__}: {first_line(e)}"
    trtexec = shutil.which("trtexec")
    info["trtexec"] = "not on PATH"
    if trtexec:
        try:
            text = subprocess.run([trtexec, "--help"], capture_output=True, text=True, timeout=30)
            found = re.search(r"TensorRT v(\d+)", text.stdout + text.stderr)
            info["trtexec"] = f"{trtexec} (TensorRT v{found.group(1) if found else '?'})"
        except (OSError, subprocess.TimeoutExpired) as e:
            info["trtexec"] = f"{trtexec} (does not run: {first_line(e)})"
    import edgekd

    info["edgekd"] = f"{edgekd.__version__} ({Path(edgekd.__file__).parent})"
    for key, value in info.items():
        for line in value if isinstance(value, list) else [value]:
            print(f"{key:>12}: {line}")
    if CUDA_EP not in info["onnxruntime"]:
        print(
            f"{'note':>12}: no {CUDA_EP}: pip uninstall -y onnxruntime && pip install onnxruntime-gpu"
        )
    return "PASS", f"recorded in {out / 'env.json'}", info


def step_train(out: Path) -> Result:
    args = ["compress", "--device", "cuda", "--epochs", EPOCHS, "--qat-epochs", QAT_EPOCHS,
            "--target", TARGET, "--out", str(out / "run"), "--cache-dir", str(out / "teacher-cache"),
            "--max-accuracy-drop", "100", "--allow-slower-int8", "--json"]  # fmt: skip
    status, reason, seen = check_training(*edgekd_observed(args), "edgekd compress", qat=True)
    missing = [
        m for m in ("teacher", "student_fp32", "student_int8")
        if not (out / "run" / f"{m}.onnx").is_file()
    ]  # fmt: skip
    if status == "PASS" and missing:
        return "FAIL", f"no {', '.join(missing)}.onnx in {out / 'run'}", seen
    return status, reason, seen


def step_distill_live(out: Path) -> Result:
    # random crops: the teacher runs live on every batch (no cache), on the training device
    args = ["distill", "--device", "cuda", "--augment", "crop", "--epochs", "1",
            "--out", str(out / "live")]  # fmt: skip
    status, reason, seen = check_training(*edgekd_observed(args), "edgekd distill", qat=False)
    if status == "PASS" and not any("live on cuda" in t for t in seen["teacher"]):
        return "FAIL", f"the live teacher did not run on CUDA: {seen['teacher']}", seen
    return status, reason, seen


def step_ddp(out: Path) -> Result:
    import torch

    n = torch.cuda.device_count()
    if n < 2:
        return "SKIP", f"needs 2+ GPUs for --nproc 2 on NCCL (this machine has {n})", {}
    code, _ = edgekd("distill", "--nproc", "2", "--device", "auto", "--epochs", "1",
                     "--out", str(out / "ddp"), "--cache-dir", str(out / "teacher-cache"))  # fmt: skip
    if code != 0 or not (out / "ddp" / "student.pt").is_file():
        return "FAIL", f"edgekd distill --nproc 2 exited {code} (see the log above)", {}
    return "PASS", "edgekd distill --nproc 2 --device auto trained on 2 GPUs (NCCL)", {}


def ort_placement(path: Path, x: Any, prefix: Path) -> Counter:
    """Nodes per execution provider, from ONNX Runtime's profile of one query (copies left out)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.enable_profiling = True
    prefix.parent.mkdir(parents=True, exist_ok=True)
    opts.profile_file_prefix = str(prefix)
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=[CUDA_EP, CPU_EP])
    session.run(None, {session.get_inputs()[0].name: x})
    events = json.loads(Path(session.end_profiling()).read_text())
    nodes = {
        e["name"]: e["args"]["provider"]
        for e in events
        if e.get("cat") == "Node"
        and "provider" in e.get("args", {})
        and not str(e["args"].get("op_name", "")).startswith("Memcpy")
    }
    return Counter(nodes.values())


def step_ort_cuda(out: Path) -> Result:
    import onnxruntime as ort

    from edgekd.runners.ort_runner import OrtRunner

    run = need_models(out)
    if run is None:
        return "SKIP", "no exported models: the train step failed", {}
    available = ort.get_available_providers()
    if CUDA_EP not in available:
        return "FAIL", (f"onnxruntime {ort.__version__} has no {CUDA_EP} ({', '.join(available)}):"
                        " pip uninstall -y onnxruntime && pip install onnxruntime-gpu"), {}  # fmt: skip
    x = val_inputs(run)
    details: dict[str, Any] = {}
    failures, parts = [], []
    for name in ("teacher", "student_fp32", "student_int8"):
        path = run / f"{name}.onnx"
        with OrtRunner(path, (CUDA_EP, CPU_EP), threads=0) as gpu:
            used = gpu.session.get_providers()
            y_gpu = gpu.predict(x)
        with OrtRunner(path, (CPU_EP,), threads=0) as cpu:
            y_cpu = cpu.predict(x)
        placed = ort_placement(path, x[:1], out / "ort" / name)
        agree = agreement(y_gpu, y_cpu)
        details[name] = {"session_providers": used, "nodes": dict(placed), "agreement": agree,
                         "max_abs_diff": float(abs(y_gpu - y_cpu).max())}  # fmt: skip
        print(f"{name}: session {used}, nodes per provider {dict(placed)}, top-1 agreement with "
              f"CPU {agree:.2%}, max |diff| {details[name]['max_abs_diff']:.2e}")  # fmt: skip
        if used[0] != CUDA_EP:
            failures.append(f"{name}: the session fell back to {used[0]}")
        elif placed[CUDA_EP] == 0:
            failures.append(f"{name}: no node ran on CUDA ({dict(placed)})")
        elif agree < MIN_AGREEMENT:
            failures.append(f"{name}: CUDA agrees with CPU on {agree:.1%} of top-1")
        parts.append(f"{name} {placed[CUDA_EP]}/{sum(placed.values())} nodes on CUDA, {agree:.1%}")
    # compress's validation ran with the target's providers (TensorRT, CUDA, CPU)
    report = json.loads((run / "report.json").read_text())
    for name, lat in report.get("latency_ms", {}).items():
        found = re.search(r"onnxruntime \S+ (\w+)", lat.get("where", ""))
        provider = found.group(1) if found else "unknown"
        details.setdefault(name, {})["validate_provider"] = provider
        print(f"{name}: edgekd validate ({TARGET} providers) measured on {provider}")
        if provider == CPU_EP:
            failures.append(f"validate ran {name} on {CPU_EP} although {TARGET} lists CUDA")
    # edgekd bench with a host profile whose providers are CUDA then CPU
    text = host_profile().read_text()
    profile = out / "targets" / "gpu-smoke-cuda.toml"
    profile.parent.mkdir(parents=True, exist_ok=True)
    cpu_line = f'execution_providers = ["{CPU_EP}"]'
    if cpu_line not in text or "[latency]" not in text:
        return "FAIL", f"the host-cpu profile no longer has {cpu_line!r} and [latency]", details
    text = text.split("[latency]")[0].replace(
        cpu_line, f'execution_providers = ["{CUDA_EP}", "{CPU_EP}"]'
    )
    text = re.sub(
        r"(?m)^description = .*$", 'description = "This machine\'s GPU: ONNX Runtime CUDA"', text
    )
    text = text.replace('name = "host-cpu"', 'name = "gpu-smoke-cuda"')
    profile.write_text(
        text + "[latency]\nwarmup = 20\nmin_queries = 256\nmin_duration_s = 1.0\nthreads = 0\n"
    )
    code, stdout = edgekd(
        "bench", str(run / "student_int8.onnx"), "--target", str(profile), "--json"
    )
    where = json.loads(stdout)["latency_ms"]["where"] if code == 0 else f"exit {code}"
    details["bench"] = where
    if CUDA_EP not in where:
        failures.append(f"edgekd bench did not run on CUDA: {where}")
    if failures:
        return "FAIL", "; ".join(failures), details
    return "PASS", f"sessions on {CUDA_EP}: " + "; ".join(parts) + "; edgekd bench on CUDA", details


def host_profile() -> Path:
    from edgekd.targets import load_target

    return Path(load_target("host-cpu").path)


def tensorrt_missing() -> str | None:
    """Why the TensorRT steps cannot run here, or None."""
    if importlib.util.find_spec("tensorrt") is None and shutil.which("trtexec") is None:
        return "skipped: TensorRT not installed (no tensorrt Python module, no trtexec on PATH)"
    return None


def step_tensorrt_build(out: Path) -> Result:
    if why := tensorrt_missing():
        return "SKIP", why, {}
    run = need_models(out)
    if run is None:
        return "SKIP", "no student_int8.onnx: the train step failed", {}
    code, stdout = edgekd("build-engine", str(run / "student_int8.onnx"), "--target", TARGET,
                          "--out", str(out / "engine"), "--json")  # fmt: skip
    if code != 0:
        return "FAIL", f"edgekd build-engine exited {code} (see the log above)", {}
    summary = json.loads(stdout)
    cov = summary["int8_coverage"]
    built = f"{summary['builder']} {summary['tensorrt']}, {summary['engine_bytes']:,} bytes"
    if cov["coverage"] is None:
        return "FAIL", f"built ({built}) but INT8 coverage is unknown (no detailed layers)", summary
    text = f"INT8 coverage {cov['int8_layers']}/{cov['compute_layers']} ({cov['coverage']:.0%})"
    if cov["int8_layers"] == 0:
        return "FAIL", f"{text}: nothing runs INT8 ({built})", summary
    return "PASS", f"{text}, {built} (this GPU, {TARGET} settings)", summary


def step_tensorrt_run(out: Path) -> Result:
    """The device bundle (what validate --remote runs on a Jetson), here: build, infer, time."""
    import numpy as np

    from edgekd.export.tensorrt import config_for_model
    from edgekd.runners.bundle import build_bundle
    from edgekd.runners.ort_runner import OrtRunner
    from edgekd.targets import load_target

    if importlib.util.find_spec("tensorrt") is None:
        return (
            "SKIP",
            "skipped: TensorRT not installed (the device bundle needs its Python module)",
            {},
        )
    run = need_models(out)
    if run is None:
        return "SKIP", "no student_int8.onnx: the train step failed", {}
    work = out / "trt-run"
    work.mkdir(parents=True, exist_ok=True)
    model = work / "student_int8.onnx"
    shutil.copyfile(run / "student_int8.onnx", model)
    build = asdict(config_for_model(model, load_target(TARGET)))
    (work / "build.json").write_text(json.dumps(build))
    x = val_inputs(run)
    np.save(work / "x.npy", x)
    cmd = [sys.executable, str(build_bundle(work)), "run", str(model), "--runtime", "tensorrt",
           "--build-config", str(work / "build.json"), "--input", str(work / "x.npy"),
           "--result", str(work / "result.json"), "--logits", str(work / "logits.npy"),
           "--latency", "--warmup", "50", "--min-queries", "256", "--min-duration", "1"]  # fmt: skip
    print("$ " + shlex.join(cmd), flush=True)
    code = subprocess.run(cmd, check=False).returncode
    if code == 3:
        return "SKIP", "the device bundle lacks a module or library (see its error above)", {}
    if code != 0:
        return "FAIL", f"the device bundle exited {code} (see its error above)", {}
    result = json.loads((work / "result.json").read_text())
    with OrtRunner(model, (CPU_EP,), threads=0) as cpu:
        agree = agreement(np.load(work / "logits.npy"), cpu.predict(x))
    lat = result["latency"]
    details = {"agreement_with_ort_cpu": agree, "latency_ms": lat, "where": result["where"]}
    reason = (f"engine {result.get('version')}: top-1 agreement with ORT CPU {agree:.1%}, "
              f"p50 {lat['p50']:.3f} ms, p90 {lat['p90']:.3f} ms (batch 1, CUDA events)")  # fmt: skip
    return ("PASS" if agree >= MIN_AGREEMENT else "FAIL"), reason, details


def step_pytest(out: Path) -> Result:
    import xml.etree.ElementTree as ET

    if importlib.util.find_spec("pytest") is None:
        return "FAIL", "pytest is not installed: pip install -e '.[test,tensorrt]'", {}
    xml = out / "pytest.xml"
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu or tensorrt", "-rs", "-p", "no:cacheprovider",
           f"--basetemp={out / 'pytest-tmp'}", f"--junitxml={xml}", "tests"]  # fmt: skip
    print("$ " + shlex.join(cmd), flush=True)
    code = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[1], check=False).returncode
    if code == 5:
        return "SKIP", "no test is marked gpu or tensorrt", {}
    if not xml.is_file():
        return "FAIL", f"pytest exited {code} without a report", {}
    suite = ET.parse(xml).getroot()
    suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
    n = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    passed = n["tests"] - n["failures"] - n["errors"] - n["skipped"]
    skips = sorted({s.get("message", "") for s in suite.iter("skipped")})
    counts = f"{passed} passed, {n['failures'] + n['errors']} failed, {n['skipped']} skipped"
    if code != 0 or n["failures"] or n["errors"]:
        return "FAIL", f"-m 'gpu or tensorrt': {counts} (exit {code})", n
    if passed == 0:
        return "SKIP", f"-m 'gpu or tensorrt': all {n['skipped']} skipped: {'; '.join(skips)}", n
    return "PASS", f"-m 'gpu or tensorrt': {counts}", n


STEPS: dict[str, Callable[[Path], Result]] = {
    "env": step_env,
    "train": step_train,
    "distill-live": step_distill_live,
    "ddp": step_ddp,
    "ort-cuda": step_ort_cuda,
    "tensorrt-build": step_tensorrt_build,
    "tensorrt-run": step_tensorrt_run,
    "pytest": step_pytest,
}


def preflight() -> int:
    """0 on a usable CUDA machine; else one line on stdout and 1."""
    try:
        import torch
    except Exception as e:  # noqa: BLE001 - whatever stops the import
        print(f"torch does not import in {sys.executable}: {first_line(e)}")
        return 1
    if not torch.cuda.is_available():
        build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        print(
            f"no CUDA GPU: torch.cuda.is_available() is False (torch {torch.__version__}, {build})"
        )
        return 1
    if importlib.util.find_spec("edgekd") is None:
        print(f"edgekd is not installed for {sys.executable}: pip install -e '.[test,tensorrt]'")
        return 1
    return 0


def main(argv: list[str]) -> int:
    if argv == ["preflight"]:
        return preflight()
    if len(argv) != 2 or argv[0] not in STEPS:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[1])
    try:
        status, reason, details = STEPS[argv[0]](out)
    except Exception as e:  # noqa: BLE001 - a crashed check is a failed step, with its reason
        import traceback

        traceback.print_exc()
        status, reason, details = "FAIL", f"{type(e).__name__}: {first_line(e)}", {}
    (out / f"{argv[0]}.json").write_text(
        json.dumps({"status": status, "reason": reason, "details": details}, indent=2, default=str)
    )
    print(f"VERDICT {status}: {reason}", flush=True)
    return 1 if status == "FAIL" else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
