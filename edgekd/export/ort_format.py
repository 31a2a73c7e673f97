"""ORT format (``.ort``) for ONNX Runtime Mobile, made by ONNX Runtime's own converter."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from edgekd.atomic import write_bytes
from edgekd.errors import EdgekdError


def to_ort_format(onnx_path: Path, ort_path: Path, target_platform: str = "arm") -> None:
    """Convert ``onnx_path`` with fixed optimisations for ``target_platform``; write atomically.

    "Fixed" applies the graph optimisations once, at conversion, so a minimal mobile build
    needs no optimiser; ``arm`` keeps out the x86-only layout transforms.
    """
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / onnx_path.name
        src.write_bytes(onnx_path.read_bytes())
        cmd = [
            sys.executable, "-m", "onnxruntime.tools.convert_onnx_models_to_ort", str(src),
            "--optimization_style", "Fixed", "--target_platform", target_platform,
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True)
        produced = src.with_suffix(".ort")
        if proc.returncode != 0 or not produced.exists():
            lines = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
            raise EdgekdError(
                f"ORT format conversion of {onnx_path.name} failed: {lines[-1] if lines else proc.returncode}"
            )
        write_bytes(ort_path, produced.read_bytes())
