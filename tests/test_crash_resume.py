"""Crash consistency: ``kill -9`` (or Ctrl-C) at named points, then ``--resume``, ends
bit-identical to an uninterrupted run, with nothing half-written visible on the way.

The harness is bench/crash_resume.py (which prints the whole matrix); here two points run by
default and every point under ``-m slow``.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from edgekd.atomic import remove_leftovers, write_torch
from edgekd.data import Split
from edgekd.distill.augment import make_augment
from edgekd.distill.losses import make_objective
from edgekd.distill.trainer import TrainConfig, fit
from edgekd.errors import BadInput
from edgekd.faults import _parse

BENCH = Path(__file__).parents[1] / "bench" / "crash_resume.py"
_spec = importlib.util.spec_from_file_location("crash_resume", BENCH)
crash = sys.modules["crash_resume"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(crash)

FAST = ("distill: mid-epoch 2", "distill: Ctrl-C mid-epoch 1")


def _python(code: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env={**os.environ, **env},
        capture_output=True, text=True, timeout=120, start_new_session=True,
    )  # fmt: skip


def test_kill_spec_parses_and_bad_ones_are_bad_input() -> None:
    assert _parse("distill:batch:3") == ("distill:batch", 3)
    assert _parse("write:student.pt") == ("write:student.pt", 1)
    for bad in ("distill", "distill:batch:0", "a:b:c:2"):
        with pytest.raises(BadInput, match="EDGEKD_KILL_AT"):
            _parse(bad)


def test_kill_point_kills_the_process_group_at_the_nth_time(tmp_path: Path) -> None:
    code = "from edgekd import faults\nfor i in range(5):\n    faults.point('x', 'y'); print(i)"
    killed = _python(code, tmp_path, EDGEKD_KILL_AT="x:y:3")
    assert killed.returncode == -signal.SIGKILL
    assert killed.stdout.split() == ["0", "1"]
    assert _python(code, tmp_path, EDGEKD_KILL_AT="x:z").stdout.split() == list("01234")


def test_write_killed_before_its_rename_leaves_the_old_file(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"old")
    code = "from edgekd.atomic import write_bytes\nwrite_bytes('a.bin', b'new' * 1000)"
    assert _python(code, tmp_path, EDGEKD_KILL_AT="write:a.bin").returncode == -signal.SIGKILL
    assert (tmp_path / "a.bin").read_bytes() == b"old"
    left = remove_leftovers(tmp_path)
    assert [p.name.startswith(".a.bin.") for p in left] == [True]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_torch_files_are_bit_identical_whatever_their_name(tmp_path: Path) -> None:
    state = {"w": torch.arange(6.0)}
    write_torch(tmp_path / "one.pt", state)
    write_torch(tmp_path / "two.pt", state)
    assert (tmp_path / "one.pt").read_bytes() == (tmp_path / "two.pt").read_bytes()


class Stop(Exception):
    pass


def _student() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.3),
        nn.Flatten(), nn.Linear(4 * 8 * 8, 3),
    )  # fmt: skip


def test_training_resumed_from_a_checkpoint_is_bit_identical(tmp_path: Path) -> None:
    """Dropout draws from torch's global generator and augmentation from its own: both replay."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(96, 1, 8, 8, generator=g)
    split = Split(x, torch.randint(0, 3, (96,), generator=g))
    teacher = torch.randn(96, 3, generator=g)
    cfg = TrainConfig(epochs=3, lr=1e-2, batch_size=32, bn_recalibration=0)
    options = {"device": torch.device("cpu"), "augment": make_augment("crop")}

    straight = _student()
    fit(straight, split, teacher, make_objective("kd"), cfg, **options)

    ckpt = tmp_path / "distill.ckpt"

    def stop_at_2(model: nn.Module, epoch: int) -> None:
        if epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        fit(_student(), split, teacher, make_objective("kd"), cfg, checkpoint=ckpt,
            before_epoch=stop_at_2, **options)  # fmt: skip
    resumed = _student()
    torch.manual_seed(12345)  # another process: the global generator starts elsewhere
    fit(resumed, split, teacher, make_objective("kd"), cfg, checkpoint=ckpt, **options)
    for (name, a), b in zip(
        straight.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


@pytest.fixture(scope="module")
def matrix(tmp_path_factory, digits_options) -> tuple[Path, dict, dict[str, int]]:
    """(config.toml, the uninterrupted run's results, steps per epoch) of a short digits run."""
    root = tmp_path_factory.mktemp("crash")
    options = {**digits_options, "epochs": 2, "qat_epochs": 1, "max_accuracy_drop": 100.0}
    config = crash.write_config(options, root / "config.toml")
    ref = crash.compress(config, root / "reference" / "run", root / "reference" / "cache")
    assert ref.returncode == 0, ref.stderr[-3000:]
    return config, crash.results(root / "reference" / "run"), crash.steps_per_epoch(options)


def _check(name: str, matrix, tmp_path: Path) -> None:
    config, reference, steps = matrix
    kill_at, sig = crash.POINTS[name]
    o = crash.kill_and_resume(name, kill_at, sig, config, tmp_path, reference, steps)
    assert o.killed_rc == (-signal.SIGKILL if sig == "KILL" else 130), o
    assert o.one_line, o  # Ctrl-C: exit 130 and one line
    assert o.half_written == [], o
    assert o.resumed_rc == 0, o
    assert o.identical, (o, crash.results(tmp_path / "run"), reference)
    assert o.leftovers == [], o
    assert o.ok


@pytest.mark.parametrize("name", FAST)
def test_killed_run_resumes_bit_identical(name: str, matrix, tmp_path: Path) -> None:
    _check(name, matrix, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in crash.POINTS if n not in FAST])
def test_every_kill_point_resumes_bit_identical(name: str, matrix, tmp_path: Path) -> None:
    _check(name, matrix, tmp_path)
