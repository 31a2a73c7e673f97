#!/usr/bin/env python
"""Bad input, as a new user gives it: every case a real ``edgekd`` subprocess in its own folder.

Each case writes the files it needs into a fresh temporary folder, runs ``python -m edgekd ...``
there (``EDGEKD_QUIET=1``: progress lines off, so stderr holds only what went wrong) and records
the exit code, the first stderr line, whether stderr is exactly one ``edgekd: error:`` line with
no traceback, and whether the folder is left as it was (``--out`` not created, or unchanged
where it existed). The expected outcome of every case is exit 2 with one line.

Usage: python bench/bad_inputs.py [--md docs/bad-inputs.md] [--only NAME ...]
Writes the Markdown table (default docs/bad-inputs.md) and prints the counts.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = resources.files("edgekd.example")
NPZ = str(EXAMPLE / "fashion_mnist_small.npz")
TEACHER_PT = str(EXAMPLE / "teacher.pt")
FACTORY = "edgekd.example.teacher:fashion_cnn"
HOST_CPU = ROOT / "targets" / "host-cpu.toml"
TIMEOUT_S = 120  # a bad input is refused in seconds; a case still running then counts as other

# files a case writes into its folder before it runs: name -> content (str or bytes)
Files = dict[str, str | bytes]


@dataclass(frozen=True)
class Case:
    """One bad input: ``args`` after ``edgekd`` (run in a folder holding ``files``); ``out`` is
    the run folder that must be left as it was; ``fast``: in the test's subset."""

    name: str
    args: tuple[str, ...]
    files: Files | Callable[[], Files] | None = None
    out: str = "run"
    fast: bool = False

    def written(self) -> Files:
        return (self.files() if callable(self.files) else self.files) or {}


def _manifest(indices: str) -> Files:
    return {"calib.toml": f"indices = {indices}\n"}


def _nested(depth: int = 5000) -> str:
    return "x = " + "[" * depth + "]" * depth + "\n"


def _target(edit: tuple[str, str]) -> Callable[[], Files]:
    return lambda: {"board.toml": HOST_CPU.read_text().replace(*edit, 1)}


def _pickled() -> Files:
    import io

    import torch

    buf = io.BytesIO()
    torch.save(torch.nn.Linear(2, 2), buf)  # a whole module: weights_only=True refuses it
    return {"model.pt": buf.getvalue()}


def _existing_run() -> Files:
    return {"run/config.json": "{}\n", "run/logs/.keep": ""}


RAISES = "def build():\n    raise ValueError('width must be a multiple of 8, got 12')\n"
NOT_A_MODULE = "def build():\n    return 42\n"
FIVE_CLASSES = (
    "from torch import nn\n\n\ndef build():\n"
    "    return nn.Sequential(nn.Flatten(), nn.Linear(784, 5))\n"
)
EXAMPLE_TEACHER = ("--teacher", FACTORY, "--weights", TEACHER_PT, "--data", NPZ)
C = ("compress", "--out", "run")

CASES: list[Case] = [
    # --- numbers: type, finiteness, range (CLI)
    Case("--lr nan", (*C, "--lr", "nan"), fast=True),
    Case("--lr inf", (*C, "--lr", "inf")),
    Case("--lr -1", (*C, "--lr", "-1")),
    Case("--lr not a number", (*C, "--lr", "fast")),
    Case("--temperature nan", (*C, "--temperature", "nan")),
    Case("--temperature 0", (*C, "--temperature", "0")),
    Case("--max-accuracy-drop nan", (*C, "--max-accuracy-drop", "nan")),
    Case("--max-accuracy-drop -1", (*C, "--max-accuracy-drop", "-1")),
    Case("--alpha 1.5", (*C, "--alpha", "1.5")),
    Case("--epochs 0", (*C, "--epochs", "0")),
    Case("--epochs 2.5", (*C, "--epochs", "2.5")),
    Case("--qat-epochs -1", (*C, "--qat-epochs", "-1")),
    Case("--batch-size 0", (*C, "--batch-size", "0")),
    Case("--seed -1", (*C, "--seed", "-1")),
    Case("--min-compression inf", (*C, "--min-compression", "inf")),
    Case("--weight-bits 4", (*C, "--weight-bits", "4")),
    Case("--mean not numbers", (*C, "--mean", "a,b")),
    Case("--std 0", (*C, "--std", "0")),
    Case("--input-size 0", (*C, "--input-size", "0")),
    Case("--ensemble-weights count", (*C, "--ensemble-weights", "0.5,0.5")),
    Case("--loss-weight not NAME=N", (*C, "--loss-weight", "at")),
    Case("--loss-weight for a term not in --loss", (*C, "--loss-weight", "at=1000")),
    # --- names with a fixed vocabulary
    Case("--optimizer adam", (*C, "--optimizer", "adam")),
    Case("--augment flip", (*C, "--augment", "flip")),
    Case("--device gpu", (*C, "--device", "gpu")),
    Case("--loss kd+xx", (*C, "--loss", "kd+xx")),
    Case("--calibrator kl", (*C, "--calibrator", "kl")),
    Case("--keep-float -1", (*C, "--keep-float", "-1")),
    Case("unknown option", (*C, "--learning-rate", "0.1"), fast=True),
    # --- options that do not fit together
    Case("--teacher without --data", (*C, "--teacher", FACTORY)),
    Case("--unlabeled-only alone", (*C, "--unlabeled-only")),
    Case("--keep-float 2 --no-sensitivity", (*C, "--keep-float", "2", "--no-sensitivity")),
    Case("--loss dkd with mixup", (*C, "--loss", "dkd", "--augment", "crop+mixup")),
    Case("--mix-alpha without mixing", (*C, "--mix-alpha", "0.4")),
    Case("--ptq with --qat-epochs", (*C, "--ptq", "--qat-epochs", "2")),
    # --- the same values in --config
    Case("--config lr = nan", (*C, "--config", "c.toml"), {"c.toml": "lr = nan\n"}, fast=True),
    Case(
        "--config temperature = nan", (*C, "--config", "c.toml"), {"c.toml": "temperature = nan\n"}
    ),
    Case(
        "--config max_accuracy_drop = nan",
        (*C, "--config", "c.toml"),
        {"c.toml": "max_accuracy_drop = nan\n"},
    ),
    Case("--config lr = inf", (*C, "--config", "c.toml"), {"c.toml": "lr = inf\n"}),
    Case("--config family = vit", (*C, "--config", "c.toml"), {"c.toml": 'family = "vit"\n'}),
    Case("--config lr is a string", (*C, "--config", "c.toml"), {"c.toml": 'lr = "fast"\n'}),
    Case(
        "--config unknown key",
        (*C, "--config", "c.toml"),
        {"c.toml": "learning_rate = 0.1\n"},
    ),
    Case("--config not TOML", (*C, "--config", "c.toml"), {"c.toml": "lr = \n"}),
    Case("--config missing", (*C, "--config", "none.toml")),
    Case("--config deeply nested array", (*C, "--config", "c.toml"), {"c.toml": _nested()}),
    # --- --out
    Case(
        "--out names a file",
        ("compress", "--out", "taken"),
        {"taken": "a file\n"},
        "taken",
        fast=True,
    ),
    Case(
        "--out under a file",
        ("compress", "--out", "taken/run"),
        {"taken": "a file\n"},
        "taken",
    ),
    Case(
        "--out read-only (/proc)",
        ("compress", "--out", "/proc/edgekd-run"),
        out="/proc/edgekd-run",
        fast=True,
    ),
    Case("--out holds a run, no --resume", C, _existing_run, fast=True),
    # --- calibration manifest (the bundled example's data)
    Case(
        "manifest: negative index",
        (*C, "--calib-manifest", "calib.toml"),
        _manifest("[0, 1, -5]"),
        fast=True,
    ),
    Case("manifest: float index", (*C, "--calib-manifest", "calib.toml"), _manifest("[0, 1.5]")),
    Case("manifest: string index", (*C, "--calib-manifest", "calib.toml"), _manifest('["0"]')),
    Case(
        "manifest: index out of range",
        (*C, "--calib-manifest", "calib.toml"),
        _manifest("[0, 999999]"),
    ),
    Case("manifest: 3 indices", (*C, "--calib-manifest", "calib.toml"), _manifest("[0, 1, 2]")),
    Case("manifest: missing", (*C, "--calib-manifest", "none.toml")),
    Case("--calib-samples 5", (*C, *EXAMPLE_TEACHER, "--calib-samples", "5")),
    # --- the user's teacher, student and checkpoints
    Case(
        "teacher factory raises",
        (*C, "--teacher", "mine.py:build", "--data", NPZ),
        {"mine.py": RAISES},
        fast=True,
    ),
    Case("student factory raises", (*C, "--student", "mine.py:build"), {"mine.py": RAISES}),
    Case(
        "student factory returns 42", (*C, "--student", "mine.py:build"), {"mine.py": NOT_A_MODULE}
    ),
    Case(
        "teacher has 5 classes, data 10",
        (*C, "--teacher", "mine.py:build", "--data", NPZ),
        {"mine.py": FIVE_CLASSES},
    ),
    Case("teacher file missing", (*C, "--teacher", "teacher.pt", "--data", NPZ)),
    Case(
        "teacher file corrupt",
        (*C, "--teacher", "teacher.pt", "--data", NPZ),
        {"teacher.pt": b"\x00garbage\xff" * 64},
    ),
    Case(
        "--weights not a checkpoint",
        (*C, *EXAMPLE_TEACHER[:2], "--weights", "w.pt", "--data", NPZ),
        {"w.pt": b"not a zip"},
    ),
    Case(
        "--weights a pickled module",
        (*C, *EXAMPLE_TEACHER[:2], "--weights", "model.pt", "--data", NPZ),
        _pickled,
    ),
    # --- data
    Case("--data missing", (*C, "--teacher", FACTORY, "--weights", TEACHER_PT, "--data", "x.npz")),
    Case(
        "--data corrupt npz",
        (*C, *EXAMPLE_TEACHER[:4], "--data", "d.npz"),
        {"d.npz": b"PK\x03\x04 truncated"},
    ),
    Case(
        "--data empty folder", (*C, *EXAMPLE_TEACHER[:4], "--data", "images"), {"images/.keep": ""}
    ),
    # --- targets
    Case("unknown target", (*C, "--target", "jetson-nanoo")),
    Case(
        "target: bad precision",
        (*C, "--target", "board.toml"),
        _target(('precision = "int8"', 'precision = "int4"')),
    ),
    Case("target: deeply nested array", (*C, "--target", "board.toml"), {"board.toml": _nested()}),
    # --- other commands
    Case("validate: not a run folder", ("validate", "."), out="."),
    Case("quantize: missing run folder", ("quantize", "nowhere"), out="nowhere"),
    Case("bench: missing model", ("bench", "none.onnx")),
    Case(
        "lint: not an ONNX file",
        ("lint", "m.onnx", "--target", "jetson-orin-nano-8gb"),
        {"m.onnx": b"garbage"},
    ),
    Case("targets show unknown", ("targets", "show", "nope")),
]


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (bytecode caches aside) by sha256."""
    if not folder.exists():
        return {}
    if folder.is_file():
        return {".": hashlib.sha256(folder.read_bytes()).hexdigest()}
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


@dataclass
class Outcome:
    case: Case
    exit_code: int
    stderr: str
    clean: bool
    seconds: float

    @property
    def lines(self) -> list[str]:
        return self.stderr.splitlines()

    @property
    def first_line(self) -> str:
        return self.lines[0] if self.lines else ""

    @property
    def one_line(self) -> bool:
        return (
            len(self.lines) == 1
            and self.first_line.startswith("edgekd: error: ")
            and "Traceback" not in self.stderr
        )

    @property
    def ok(self) -> bool:
        return self.exit_code == 2 and self.one_line and self.clean


def run_case(case: Case, cache: Path) -> Outcome:
    """Run ``case`` in a fresh folder; the folder (and --out) must be as it was afterwards."""
    with tempfile.TemporaryDirectory(prefix="edgekd-bad-") as tmp:
        work = Path(tmp)
        for name, content in case.written().items():
            path = work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        out = work / case.out
        before = _snapshot(work), _snapshot(out), out.exists()
        env = {**os.environ, "EDGEKD_QUIET": "1", "EDGEKD_CACHE": str(cache)}
        env.pop("EDGEKD_DEBUG", None)
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "edgekd", *case.args],
                cwd=work, env=env, capture_output=True, text=True, timeout=TIMEOUT_S,
            )  # fmt: skip
            code, stderr = proc.returncode, proc.stderr
        except subprocess.TimeoutExpired:  # accepted: the run went on (and was killed)
            code, stderr = -1, f"(still running after {TIMEOUT_S} s: the input was accepted)"
        seconds = time.perf_counter() - t0
        after = _snapshot(work), _snapshot(out), out.exists()
        return Outcome(case, code, stderr, before == after, seconds)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("`", "'")


def command(case: Case) -> str:
    shown = [a.replace(NPZ, "EXAMPLE.npz").replace(TEACHER_PT, "teacher.pt") for a in case.args]
    return "edgekd " + " ".join(a if a and " " not in a else repr(a) for a in shown)


def markdown(outcomes: list[Outcome], seconds: float) -> str:
    n = len(outcomes)
    good = sum(o.ok for o in outcomes)
    yn = {True: "y", False: "**n**"}
    rows = [
        f"| {i} | {_cell(o.case.name)} | `{_cell(command(o.case))}` | {o.exit_code} | "
        f"{_cell(o.first_line)[:200]} | {yn[o.one_line]} | {yn[o.clean]} |"
        for i, o in enumerate(outcomes, 1)
    ]
    return "\n".join(
        [
            "# Bad input",
            "",
            "Generated by `python bench/bad_inputs.py` (do not edit by hand): each case is a real",
            "`edgekd` subprocess (`python -m edgekd`) in a fresh temporary folder holding the files",
            "the case needs, with `EDGEKD_QUIET=1` (no progress lines: stderr holds only what went",
            "wrong). Every case should exit 2 with exactly one `edgekd: error:` line and no",
            "traceback, and leave the folder as it was: `--out` not created, or unchanged where it",
            "existed. `EXAMPLE.npz` and `teacher.pt` are the bundled example's files; a case",
            "without `--teacher`/`--data` runs on the bundled example.",
            "`tests/test_bad_inputs.py` runs the cases marked fast in the script on every test run.",
            "",
            f"**{n} cases: {good} one-line exit 2 with nothing left behind, {n - good} other** "
            f"({seconds:.0f} s on {os.cpu_count()} CPU cores, {sys.platform}).",
            "",
            "| # | case | command | exit | first stderr line | one line? | folder left clean? |",
            "|---:|---|---|---:|---|---|---|",
            *rows,
            "",
        ]
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--md", type=Path, default=ROOT / "docs" / "bad-inputs.md")
    p.add_argument("--only", nargs="*", help="Case names to run (default: all).")
    args = p.parse_args()
    cases = [c for c in CASES if not args.only or c.name in args.only]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgekd-bad-cache-") as cache:
        outcomes = []
        for case in cases:
            o = run_case(case, Path(cache))
            mark = "ok " if o.ok else "BAD"
            print(f"{mark} {o.exit_code} {o.seconds:5.1f}s {case.name}: {o.first_line}", flush=True)
            outcomes.append(o)
    seconds = time.perf_counter() - t0
    if not args.only:
        from edgekd.atomic import write_text

        write_text(args.md, markdown(outcomes, seconds))
        print(f"wrote {args.md}")
    good = sum(o.ok for o in outcomes)
    print(f"{len(outcomes)} cases: {good} one-line exit 2, {len(outcomes) - good} other")


if __name__ == "__main__":
    main()
