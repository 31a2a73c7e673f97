"""The machine and runtimes a measurement comes from: CPU, GPU, Jetson release, clocks."""

from __future__ import annotations

import glob
import importlib
import importlib.util
import os
import platform
import shutil
import subprocess
from typing import Any

import numpy as np

RUNTIMES = {"onnxruntime": "onnxruntime", "tensorrt": "tensorrt"}  # runtime -> module it needs
PROBE_TIMEOUT_S = 5  # for the small tools asked (nvidia-smi, nvpmodel)
# x86 extensions with int8 dot products into int32 lanes, the best first.
INT8_DOT_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().replace(b"\x00", b"").decode(errors="replace").strip() or None
    except OSError:
        return None


def _tool(*args: str) -> str | None:
    """The output of a small tool, or None when it is absent or fails."""
    if shutil.which(args[0]) is None:
        return None
    try:
        done = subprocess.run(
            list(args), capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def cpu_model() -> str:
    """The CPU's model name, as the OS reports it."""
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        if line.startswith(("model name", "Model", "Hardware")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def x86_int8_dot(cpuinfo: str | None = None) -> str | None:
    """On x86-64, the CPU's int8 dot-product extension (``"avx512_vnni"``...), or ``"none"``:
    ONNX Runtime's u8s8 kernels then use vpmaddubsw, whose int16 pair sums saturate. None on
    other machines, or where the CPU's flags cannot be read."""
    if cpuinfo is None:
        if platform.machine().lower() not in ("x86_64", "amd64"):
            return None
        cpuinfo = _read("/proc/cpuinfo")
    line = next((ln for ln in (cpuinfo or "").splitlines() if ln.startswith("flags")), None)
    if line is None:
        return None
    flags = set(line.split(":", 1)[1].split())
    return next((f for f in INT8_DOT_FLAGS if f in flags), "none")


def clocks() -> dict[str, Any]:
    """CPU and devfreq (GPU, DLA on Jetson) clocks in Hz where the OS shows them."""
    out: dict[str, Any] = {}
    cpu = "/sys/devices/system/cpu/cpu0/cpufreq/"
    for key, name in (("cpu0_hz", "scaling_cur_freq"), ("cpu0_max_hz", "scaling_max_freq")):
        value = _read(cpu + name)
        if value and value.isdigit():
            out[key] = int(value) * 1000  # cpufreq reports kHz
    governor = _read(cpu + "scaling_governor")
    if governor:
        out["cpu_governor"] = governor
    for device in sorted(glob.glob("/sys/class/devfreq/*")):
        value = _read(os.path.join(device, "cur_freq"))
        if value and value.isdigit():
            out[os.path.basename(device) + "_hz"] = int(value)
    return out


def jetson() -> dict[str, Any]:
    """L4T release, board, JetPack version and nvpmodel power mode, where readable."""
    info: dict[str, Any] = {}
    release = _read("/etc/nv_tegra_release")
    if release:
        info["l4t"] = release.splitlines()[0].lstrip("# ")
    model = _read("/proc/device-tree/model")
    if model and ("jetson" in model.lower() or release):
        info["board"] = model
    if not info:
        return info
    jetpack = _tool("dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack")
    if jetpack:
        info["jetpack"] = jetpack
    mode = _tool("nvpmodel", "-q")
    if mode:
        info["power_mode"] = " ".join(mode.split())
    return info


def gpu_model() -> str | None:
    """The GPU's name from nvidia-smi; a Jetson's integrated GPU is named by its board."""
    names = _tool("nvidia-smi", "--query-gpu=name", "--format=csv,noheader")
    return ", ".join(n.strip() for n in names.splitlines()) if names else None


def module_version(name: str) -> str | None:
    """The version of an installed module (imported to ask it), or None."""
    if importlib.util.find_spec(name) is None:
        return None
    try:
        return str(importlib.import_module(name).__version__)
    except Exception:  # noqa: BLE001 - a module that fails to import counts as absent
        return None


def fingerprint() -> dict[str, Any]:
    """The machine and runtimes a measurement comes from."""
    env: dict[str, Any] = {
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cores": os.cpu_count() or 0,
        "os": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    for module in RUNTIMES.values():
        version = module_version(module)
        if version:
            env[module] = version
    optional = {
        "int8_dot": x86_int8_dot(),
        "gpu": gpu_model(),
        "jetson": jetson(),
        "clocks": clocks(),
    }
    env.update({k: v for k, v in optional.items() if v})
    return env
