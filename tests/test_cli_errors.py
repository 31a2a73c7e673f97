"""The CLI on bad input: exit 2, one line ``edgekd: error: ...``, and no half-written --out."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.targets import list_targets

HOST_CPU = Path(__file__).parents[1] / "targets" / "host-cpu.toml"
TARGET_NAMES = sorted(p.stem for p in (Path(__file__).parents[1] / "targets").glob("*.toml"))

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FACTORIES = """
from torch import nn


class Small(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.head(self.body(x).flatten(1))


def five():
    return Small(num_classes=5)
"""


@pytest.fixture(scope="module")
def digits(request) -> dict[str, Path]:
    """The conftest digits data and teacher, requested after the thread setting."""
    source, weights = request.getfixturevalue("digits_teacher")
    return {"npz": request.getfixturevalue("digits_npz"), "source": source, "weights": weights}


@pytest.fixture(scope="module")
def factories(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("factories") / "small_teachers.py"
    path.write_text(FACTORIES)
    return path


def cli(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], env={"EDGEKD_DEBUG": None})


def options(digits: dict[str, Path], out: Path, **override: object) -> list[str]:
    """compress options for a small digits run; an override of None drops the option."""
    opts: dict[str, object] = {
        "teacher": f"{digits['source']}:DigitsTeacher",
        "weights": digits["weights"],
        "data": digits["npz"],
        "mean": "0.3",
        "std": "0.4",
        "epochs": 1,
        "qat-epochs": 0,
        "out": out,
    }
    opts.update({k.replace("_", "-"): v for k, v in override.items()})
    return [s for k, v in opts.items() if v is not None for s in (f"--{k}", str(v))]


def bad_input(result, *needles: str) -> str:
    """Assert exit 2 with a single ``edgekd: error:`` line holding every needle; return it."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("edgekd: error: ") and line.isprintable(), line
    assert result.stdout == ""
    for needle in needles:
        assert needle in line, (needle, line)
    return line


def compress_fails(digits, tmp_path, *needles: str, **override: object) -> str:
    out = tmp_path / "run"
    line = bad_input(cli("compress", *options(digits, out, **override)), *needles)
    assert not out.exists(), f"{out} was created: {sorted(p.name for p in out.rglob('*'))}"
    return line


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(folder)): (
            hashlib.sha256(p.read_bytes()).hexdigest(),
            p.stat().st_mtime_ns,
        )
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# --- teacher -------------------------------------------------------------------------------


def test_missing_teacher_file(digits, tmp_path) -> None:
    missing = tmp_path / "nowhere" / "teacher.pt"
    compress_fails(
        digits, tmp_path, str(missing), "no such teacher file", teacher=missing, weights=None
    )


@pytest.mark.parametrize(
    ("suffix", "says"),
    [(".pt", "not a TorchScript file"), (".onnx", "ONNX"), (".pt2", "not a torch.export program")],
)
def test_corrupt_teacher_file(digits, tmp_path, suffix, says) -> None:
    corrupt = tmp_path / f"teacher{suffix}"
    corrupt.write_bytes(b"\x00garbage\xff" * 300)
    compress_fails(digits, tmp_path, corrupt.name, says, teacher=corrupt, weights=None)


def test_weights_that_do_not_fit(digits, tmp_path) -> None:
    state = torch.load(digits["weights"], weights_only=True)
    state["head.weight"] = state["head.weight"][:5]
    del state["head.bias"]
    bad = tmp_path / "other.pt"
    torch.save(state, bad)
    compress_fails(
        digits, tmp_path, "other.pt", "do not fit the architecture", "missing head.bias",
        "head.weight (5, 128) vs (10, 128)", weights=bad,
    )  # fmt: skip


@pytest.mark.parametrize("what", ["custom object", "whole module"])
def test_pickled_checkpoint_refused_by_weights_only(digits, tmp_path, opaque, what) -> None:
    state = torch.load(digits["weights"], weights_only=True)
    pickled = tmp_path / "checkpoint.pt"
    if what == "custom object":
        torch.save({"state_dict": state, "meta": opaque}, pickled)
    else:
        torch.save(torch.nn.Linear(4, 2), pickled)
    line = compress_fails(digits, tmp_path, "checkpoint.pt", "weights_only", weights=pickled)
    assert "state_dict()" in line and "torch.save" in line


def test_class_count_mismatch(digits, tmp_path, factories) -> None:
    compress_fails(
        digits, tmp_path, "the teacher has 5 classes but the data has 10",
        teacher=f"{factories}:five", weights=None,
    )  # fmt: skip


def test_factory_file_without_that_attribute(digits, tmp_path, factories) -> None:
    compress_fails(
        digits, tmp_path, "no callable named 'seven'", teacher=f"{factories}:seven", weights=None
    )


# --- data ----------------------------------------------------------------------------------


@pytest.mark.parametrize("content", ["empty", "only a .txt", "class folder of .txt"])
def test_data_folder_without_images(digits, tmp_path, content) -> None:
    data = tmp_path / "images"
    data.mkdir()
    if content == "only a .txt":
        (data / "README.txt").write_text("no pictures here\n")
    elif content == "class folder of .txt":
        (data / "cat").mkdir()
        (data / "cat" / "notes.txt").write_text("meow\n")
    compress_fails(digits, tmp_path, "no images in", str(data), data=data)


def test_missing_data_path(digits, tmp_path) -> None:
    compress_fails(digits, tmp_path, "data path does not exist", data=tmp_path / "absent")


# --- targets -------------------------------------------------------------------------------


def test_unknown_target_suggests_near_names(digits, tmp_path) -> None:
    line = compress_fails(digits, tmp_path, 'unknown target "jetson-orin"', target="jetson-orin")
    assert "did you mean" in line and "jetson-orin-nano-8gb" in line


def test_misspelt_target_suggests_close_name(digits, tmp_path) -> None:
    compress_fails(digits, tmp_path, "did you mean: raspberry-pi-5", target="raspbery-pi-5")


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (('precision = "int8"', 'precision = "int4"'), "precision must be one of"),
        (("max_params = 2_000_000", "max_params = -3"), "budgets.max_params must be"),
        (("[budgets]", "[budgets]\nmax_flops = 1"), "unknown key(s) budgets.max_flops"),
        (("[latency]", "[latency\n"), "invalid TOML"),
    ],
)
def test_invalid_target_file(digits, tmp_path, edit, says) -> None:
    text = HOST_CPU.read_text()
    assert edit[0] in text
    target = tmp_path / "mine.toml"
    target.write_text(text.replace(edit[0], edit[1]))
    compress_fails(digits, tmp_path, "mine.toml", says, target=target)


def test_budget_no_student_can_meet(digits, tmp_path) -> None:
    text = HOST_CPU.read_text()
    assert "max_params = 2_000_000" in text
    target = tmp_path / "tiny-budget.toml"
    text = text.replace("max_params = 2_000_000", "max_params = 100")
    target.write_text(text.replace('name = "host-cpu"', 'name = "tiny-budget"'))
    line = compress_fails(
        digits, tmp_path, "no student of any available family meets the budgets", target=target
    )
    assert "tiny-budget" in line and "params" in line and "> 100" in line


# --- options -------------------------------------------------------------------------------


@pytest.mark.parametrize("given", ["teacher", "data"])
def test_teacher_and_data_go_together(digits, tmp_path, given) -> None:
    drop = {"data": None} if given == "teacher" else {"teacher": None, "weights": None}
    compress_fails(digits, tmp_path, "give both --teacher and --data", **drop)


@pytest.mark.parametrize(
    ("option", "text", "says"),
    [
        ("mean", "abc", "expected comma-separated numbers"),
        ("mean", "0.3,,nan", "expected comma-separated numbers"),
        ("std", "0", "std values must be positive"),
        ("mean", "0.1,0.2", "mean has 2 values for 1 channels"),
    ],
)
def test_bad_normalisation(digits, tmp_path, option, text, says) -> None:
    compress_fails(digits, tmp_path, says, **{option: text})


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [("epochs", 0, "--epochs must be at least 1"), ("qat-epochs", -1, "--qat-epochs must be 0")],
)
def test_bad_numbers(digits, tmp_path, option, value, says) -> None:
    compress_fails(digits, tmp_path, says, **{option: value})


def test_existing_run_folder_needs_resume(digits, tmp_path) -> None:
    out = tmp_path / "run"
    args = options(digits, out, qat_epochs=None)  # distill has no --qat-epochs
    result = cli("distill", *args)
    assert result.exit_code == 0, (result.output, result.exception)
    assert (out / "config.json").is_file() and (out / "student.pt").is_file()
    before = snapshot(out)
    bad_input(cli("compress", *options(digits, out)), "already holds a run", "--resume", str(out))
    assert snapshot(out) == before
    bad_input(cli("distill", *args), "already holds a run")
    assert snapshot(out) == before


# --- targets commands ----------------------------------------------------------------------


def test_targets_list() -> None:
    result = cli("targets", "list")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 9
    assert [line.split()[0] for line in lines] == TARGET_NAMES == [t.name for t in list_targets()]
    result = cli("targets", "list", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout) == TARGET_NAMES


def test_targets_show() -> None:
    result = cli("targets", "show", "jetson-nano")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["name"] == "jetson-nano"
    assert shown["precision"] == "fp16" and shown["quant_scheme"] == "none"
    assert shown["budgets"]["max_params"] == 3_000_000


def test_targets_show_unknown() -> None:
    bad_input(cli("targets", "show", "nope"), 'unknown target "nope"', "targets list")


def test_targets_show_invalid_file(tmp_path) -> None:
    target = tmp_path / "broken.toml"
    target.write_text(HOST_CPU.read_text().replace('runtime = "onnxruntime"', 'runtime = "tflite"'))
    bad_input(cli("targets", "show", target), "broken.toml", "runtime must be one of")


# --- the real process ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    [
        "missing teacher",
        "class count",
        "pickled weights",
        pytest.param("corrupt .pt2"),
    ],
)
def test_real_exit_code_and_one_stderr_line(digits, tmp_path, factories, case) -> None:
    out = tmp_path / "run"
    if case == "missing teacher":
        override, needle = {"teacher": tmp_path / "absent.pt", "weights": None}, "absent.pt"
    elif case == "class count":
        override, needle = {"teacher": f"{factories}:five", "weights": None}, "5 classes"
    elif case == "pickled weights":
        torch.save(torch.nn.Linear(4, 2), tmp_path / "whole.pt")
        override, needle = {"weights": tmp_path / "whole.pt"}, "weights_only"
    else:
        (tmp_path / "teacher.pt2").write_bytes(b"\x00garbage\xff" * 300)
        override, needle = {"teacher": tmp_path / "teacher.pt2", "weights": None}, "torch.export"
    env = {k: v for k, v in os.environ.items() if k != "EDGEKD_DEBUG"}
    env.update(EDGEKD_QUIET="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "edgekd", "compress", *options(digits, out, **override)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgekd: error: "), proc.stderr
    assert needle in lines[0] and lines[0].isprintable()
    assert not out.exists()


# --- known bugs: teachers that pass the checks, then fail after --out is written ----------


def digits_teacher_module(digits: dict[str, Path]) -> torch.nn.Module:
    """The trained digits teacher as a module (large enough for the sizing rule)."""
    scope: dict = {}
    exec(compile(digits["source"].read_text(), str(digits["source"]), "exec"), scope)
    model = scope["DigitsTeacher"]()
    model.load_state_dict(torch.load(digits["weights"], weights_only=True))
    return model.eval()


def test_pt2_teacher_distils(digits, tmp_path) -> None:
    model = digits_teacher_module(digits)
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(model, (torch.zeros(2, 1, 8, 8),), dynamic_shapes=({0: batch},))
    teacher = tmp_path / "teacher.pt2"
    torch.export.save(program, str(teacher))
    out = tmp_path / "run"
    args = options(digits, out, teacher=teacher, weights=None, qat_epochs=None)
    result = cli("distill", *args)
    assert result.exit_code == 0, result.output
    assert (out / "student.pt").is_file()


def test_fixed_batch_onnx_teacher_is_handled_or_refused_up_front(digits, tmp_path) -> None:
    teacher = tmp_path / "fixed.onnx"
    torch.onnx.export(
        digits_teacher_module(digits), (torch.zeros(1, 1, 8, 8),), str(teacher), dynamo=False
    )
    out = tmp_path / "run"
    args = options(digits, out, teacher=teacher, weights=None, qat_epochs=None)
    result = cli("distill", *args)
    if result.exit_code != 0:
        bad_input(result, "fixed.onnx")
        assert not out.exists()


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the message on a machine without CUDA"
)
def test_cuda_device_without_cuda(digits, tmp_path) -> None:
    compress_fails(digits, tmp_path, "--device 'cuda'", "CUDA is not available", device="cuda")


def test_unknown_device(digits, tmp_path) -> None:
    compress_fails(digits, tmp_path, '--device "tpu9"', device="tpu9")


def test_keep_float_without_sensitivity_is_refused(digits, tmp_path) -> None:
    out = tmp_path / "run"
    args = [*options(digits, out, keep_float="auto"), "--no-sensitivity"]
    bad_input(cli("compress", *args), "--keep-float auto", "drop --no-sensitivity")
    assert not out.exists()
