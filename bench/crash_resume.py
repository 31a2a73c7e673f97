#!/usr/bin/env python
"""Crash consistency: kill ``edgekd compress`` at named points, ``--resume``, compare the results.

For each kill point (``EDGEKD_KILL_AT``, see edgekd/faults.py) a run is killed with SIGKILL sent
to its process group (or SIGINT: Ctrl-C), its run folder and teacher cache are checked for
half-written files, and ``compress --resume`` finishes it. The sha256 of student.pt,
student_qat.pt and every ONNX artifact, and the three accuracies, must equal those of an
uninterrupted run of the same config and seed. Data: scikit-learn's digits (1,397 train / 400
val, 8x8) with a small CNN teacher trained here; one torch thread per process.

Usage: python bench/crash_resume.py [--epochs 2] [--qat-epochs 1] [--points all|NAME,...]
Prints a Markdown table (and with --json FILE, the rows as JSON).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import torch

from edgekd.atomic import sha256
from edgekd.config import CompressConfig
from edgekd.config_file import config_toml
from edgekd.distill.cache import _check as check_cache_entry

ROOT = Path(__file__).resolve().parents[1]
# (kill point, signal): inside each stage; SIGINT is Ctrl-C
POINTS = {
    "plan: write config.json": ("write:config.json", "KILL"),
    "cache fill: batch 2": ("cache:batch:2", "KILL"),
    "cache fill: Ctrl-C batch 2": ("cache:batch:2", "INT"),
    "distill: mid-epoch 2": ("distill:batch:30", "KILL"),
    "distill: after epoch 1 checkpoint": ("distill:epoch:1", "KILL"),
    "distill: write student.pt": ("write:student.pt", "KILL"),
    "distill: Ctrl-C mid-epoch 1": ("distill:batch:5", "INT"),
    "quantize: mid-QAT epoch": ("qat:batch:10", "KILL"),
    "quantize: write student_qat.pt": ("write:student_qat.pt", "KILL"),
    # the 2nd write of each: plan's preflight exports the untrained models under the same names
    "export: write student_fp32.onnx": ("write:student_fp32.onnx:2", "KILL"),
    "export: write student_int8.onnx": ("write:student_int8.onnx:2", "KILL"),
    "validate: after measuring": ("validate:measured", "KILL"),
    "validate: write report.md": ("write:report.md", "KILL"),
    "validate: Ctrl-C after measuring": ("validate:measured", "INT"),
}
COMPARED = (
    "student.pt",
    "student_qat.pt",
    "teacher.onnx",
    "student_fp32.onnx",
    "student_int8.onnx",
)
INTERRUPTED = "edgekd: interrupted; rerun with --resume to continue"


def compress(
    config: Path,
    out: Path,
    cache: Path,
    *,
    resume: bool = False,
    kill_at: str | None = None,
    sig: str = "KILL",
    timeout: float = 1800,
) -> subprocess.CompletedProcess:
    """``edgekd compress --config CONFIG --out OUT`` in its own process group (what it kills)."""
    # a killed run prints only its errors (Ctrl-C: one line); the others their progress too
    quiet = "1" if kill_at else ""
    env = {**os.environ, "EDGEKD_CACHE": str(cache), "OMP_NUM_THREADS": "1", "EDGEKD_QUIET": quiet}
    env.pop("EDGEKD_KILL_AT", None)
    if kill_at:
        env.update(EDGEKD_KILL_AT=kill_at, EDGEKD_KILL_SIGNAL=sig)
    cmd = [sys.executable, "-m", "edgekd", "compress", "--config", str(config), "--out", str(out)]
    cmd += ["--json", *(["--resume"] if resume else [])]
    return subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=timeout, start_new_session=True,
        preexec_fn=_default_sigint,
    )  # fmt: skip


def _default_sigint() -> None:
    """Ctrl-C as in a terminal: a background job (``cmd &``) inherits SIGINT ignored, and Python
    then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def results(out: Path) -> dict[str, object]:
    """sha256 of the compared artifacts (and of any other ONNX or ORT file) and the accuracies."""
    names = (
        set(COMPARED) | {p.name for p in out.glob("*.onnx")} | {p.name for p in out.glob("*.ort")}
    )
    found = {name: sha256(out / name) for name in sorted(names) if (out / name).exists()}
    report = json.loads((out / "report.json").read_text())
    return {"sha256": found, "accuracy": report["accuracy"]}


def half_written(out: Path, cache: Path) -> list[str]:
    """Visible files of the run folder that do not read back whole, and cache entries that are
    incomplete (hidden ``.*.tmp`` leftovers are not visible: nothing reads them)."""
    bad = []
    for p in sorted(out.rglob("*")):
        if not p.is_file() or any(part.startswith(".") for part in p.relative_to(out).parts):
            continue
        try:
            if p.suffix == ".json":
                json.loads(p.read_text())
            elif p.suffix == ".toml":
                tomllib.loads(p.read_text())
            elif p.suffix in (".pt", ".ckpt"):
                torch.load(p, weights_only=True)
            elif p.suffix == ".onnx":
                onnx.checker.check_model(onnx.load(p))
        except Exception as e:  # noqa: BLE001 - any failure to read back is the finding
            bad.append(f"{p.relative_to(out)}: {type(e).__name__}")
    for entry in sorted(cache.iterdir()) if cache.is_dir() else []:
        if not entry.name.startswith(".") and check_cache_entry(entry, entry.name) is not None:
            bad.append(f"cache {entry.name[:12]}: incomplete")
    return bad


def leftovers(out: Path, cache: Path) -> list[str]:
    """Temporary files or checkpoints still there after a finished run."""
    left = [*out.rglob(".*.tmp"), *out.rglob("*.ckpt")]
    left += [p for p in cache.glob(".*.tmp")] if cache.is_dir() else []
    return [str(p) for p in left]


@dataclass
class Outcome:
    name: str
    kill_at: str
    signal: str
    killed_rc: int
    one_line: bool  # Ctrl-C: exit 130 and one line on stderr (SIGKILL: n/a, True)
    half_written: list[str]
    resumed_rc: int
    resumed_from: str
    epochs_lost: float
    identical: bool
    leftovers: list[str]

    @property
    def ok(self) -> bool:
        expected = -signal.SIGKILL if self.signal == "KILL" else 130
        return (
            self.killed_rc == expected and self.one_line and not self.half_written
            and self.resumed_rc == 0 and self.identical and not self.leftovers
        )  # fmt: skip


def _stderr_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _resumed_from(stderr: str) -> str:
    """What the resumed run reused: the checkpoint it continued from, or the stages it skipped."""
    lines = _stderr_lines(stderr)
    for line in lines:
        if ": resuming after epoch " in line:
            return line.split(" from ")[0]
    skipped = [line.split(":")[0] for line in lines if "skipped (--resume)" in line]
    return "skipped " + ", ".join(skipped) if skipped else "rerun from the start"


def _epochs_lost(kill_at: str, out: Path, steps: dict[str, int]) -> float:
    """Training epochs done before the kill and not kept by a checkpoint or a finished stage."""
    stage, _, rest = kill_at.partition(":")
    point, _, n = rest.partition(":")
    if point != "batch" or stage not in steps:
        return 0.0
    ckpt = out / "logs" / f"{'quantize' if stage == 'qat' else stage}.ckpt"
    kept = torch.load(ckpt, weights_only=True)["epoch"] + 1 if ckpt.exists() else 0
    return int(n) / steps[stage] - kept


def kill_and_resume(
    name: str,
    kill_at: str,
    sig: str,
    config: Path,
    root: Path,
    reference: dict,
    steps: dict[str, int],
) -> Outcome:
    """One kill point: a run killed there, checked, resumed and compared with ``reference``."""
    out, cache = root / "run", root / "cache"
    killed = compress(config, out, cache, kill_at=kill_at, sig=sig)
    lines = [line for line in _stderr_lines(killed.stderr) if "fault injection" not in line]
    one_line = sig == "KILL" or (
        killed.returncode == 130 and lines == [INTERRUPTED] and "Traceback" not in killed.stderr
    )
    broken = half_written(out, cache)
    lost = _epochs_lost(kill_at, out, steps)
    resumed = compress(config, out, cache, resume=True)
    if resumed.returncode != 0:
        print(f"{name}: resume failed:\n{resumed.stderr[-2000:]}", file=sys.stderr)
    identical = resumed.returncode == 0 and results(out) == reference
    return Outcome(
        name, kill_at, sig, killed.returncode, one_line, broken, resumed.returncode,
        _resumed_from(resumed.stderr), lost, identical, leftovers(out, cache),
    )  # fmt: skip


def _digits() -> ModuleType:
    """tests/digits.py: the digits data, teacher and fast target the tests use."""
    spec = importlib.util.spec_from_file_location("digits", ROOT / "tests" / "digits.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def digits_options(root: Path) -> dict:
    """CompressConfig fields for digits: an NPZ, a CNN teacher trained for 4 epochs, and a
    host-cpu target with a short latency method."""
    digits = _digits()
    npz = digits.write_npz(root / "digits.npz")
    teacher = digits.train_teacher(root, npz, epochs=4)
    target = digits.write_fast_target(root / "fast-host.toml")
    return {**digits.options(teacher, npz, target), "max_accuracy_drop": 100.0}


def write_config(options: dict, path: Path) -> Path:
    path.write_text(config_toml(CompressConfig(**options)))
    return path


def steps_per_epoch(options: dict) -> dict[str, int]:
    with np.load(options["data"]) as z:
        n = len(z["y_train"])
    steps = math.ceil(n / options.get("batch_size", 128))
    return {"distill": steps, "qat": steps}


def run_matrix(options: dict, points: dict[str, tuple[str, str]], root: Path) -> list[Outcome]:
    """The uninterrupted reference run, then every kill point in a folder of its own."""
    config = write_config(options, root / "config.toml")
    ref = compress(config, root / "reference" / "run", root / "reference" / "cache")
    if ref.returncode != 0:
        raise SystemExit(f"the uninterrupted run failed:\n{ref.stderr[-2000:]}")
    reference = results(root / "reference" / "run")
    steps = steps_per_epoch(options)
    outcomes = []
    for i, (name, (kill_at, sig)) in enumerate(points.items()):
        outcome = kill_and_resume(name, kill_at, sig, config, root / f"k{i}", reference, steps)
        print(f"{name}: {'ok' if outcome.ok else 'FAILED'}", file=sys.stderr, flush=True)
        outcomes.append(outcome)
    return outcomes


def table(outcomes: list[Outcome]) -> str:
    yes = {True: "y", False: "**n**"}
    rows = [
        "| kill point | EDGEKD_KILL_AT | signal | exit | nothing half-written | resumed | "
        "resumed from | epochs lost | bit-identical |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        rows.append(
            f"| {o.name} | `{o.kill_at}` | SIG{o.signal} | {o.killed_rc} | "
            f"{yes[not o.half_written and not o.leftovers]} | {yes[o.resumed_rc == 0]} | "
            f"{o.resumed_from} | {o.epochs_lost:.2f} | {yes[o.identical]} |"
        )
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--qat-epochs", type=int, default=1)
    p.add_argument("--points", default="all", help="kill point names, comma-separated")
    p.add_argument("--json", type=Path, help="also write the rows here")
    args = p.parse_args()
    points = POINTS if args.points == "all" else {k: POINTS[k] for k in args.points.split(",")}
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="edgekd-crash-") as tmp:
        root = Path(tmp)
        options = {**digits_options(root), "epochs": args.epochs, "qat_epochs": args.qat_epochs}
        outcomes = run_matrix(options, points, root)
    print(table(outcomes))
    if args.json:
        args.json.write_text(json.dumps([o.__dict__ for o in outcomes], indent=2) + "\n")
    passed = sum(o.ok for o in outcomes)
    print(f"\n{passed} of {len(outcomes)} kill points resumed bit-identical, nothing half-written")
    sys.exit(0 if passed == len(outcomes) else 1)


if __name__ == "__main__":
    main()
