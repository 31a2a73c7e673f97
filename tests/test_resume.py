"""``--resume`` with changed inputs: refused in one line naming what changed, or applied to the
stages that have not started (edgekd/resume.py)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.config import CompressConfig
from edgekd.errors import BadInput
from edgekd.pipeline import FIRST_STAGE, compress, open_run, run_in
from edgekd.resume import changes
from edgekd.resume import check as check_changes

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def check(changed: dict[str, str], started, where: str) -> list[str]:
    return check_changes(changed, started, where, FIRST_STAGE)


def test_changes_name_config_fields_and_changed_files() -> None:
    found = changes(
        {"epochs": 1, "lr": 0.1}, {"epochs": 2, "lr": 0.1},
        {"teacher": "a", "data": "d"}, {"teacher": "b", "data": "d", "student": None},
    )  # fmt: skip
    assert found == {"epochs": "1 → 2", "teacher file": "contents changed"}


def test_check_refuses_what_a_started_stage_used_and_applies_the_rest() -> None:
    started = {"distill", "quantize"}.__contains__
    with pytest.raises(BadInput) as e:
        check({"epochs": "1 → 2", "qat_epochs": "1 → 2"}, started, "RUN")
    line = str(e.value)
    assert "epochs (1 → 2)" in line and "qat_epochs (1 → 2)" in line and "RUN" in line
    assert "\n" not in line
    applied = check(
        {"qat_epochs": "1 → 2", "cache_dir": "None → '/x'"}, {"distill"}.__contains__, "RUN"
    )
    assert applied == [
        "qat_epochs 1 → 2 (applies from quantize on)",
        "cache_dir None → '/x' (no output depends on it)",
    ]
    assert check({"max_accuracy_drop": "1.0 → 2.0"}, lambda s: s != "validate", "RUN") == [
        "max_accuracy_drop 1.0 → 2.0 (applies from validate on)"
    ]


def test_only_late_stage_fields_may_change() -> None:
    fields = set(CompressConfig().to_dict())
    assert set(FIRST_STAGE) - {"calib_manifest file"} <= fields
    for shaping in ("teacher", "weights", "data", "epochs", "lr", "loss", "seed", "target"):
        assert shaping not in FIRST_STAGE


@pytest.fixture
def distilled(tmp_path, digits_options, digits_teacher, digits_npz) -> tuple[CompressConfig, Path]:
    """A run folder whose distill stage is done (quantize, export, validate are not), made with
    copies of the teacher's weights and the data that a test may change."""
    weights = tmp_path / "weights.pt"
    shutil.copy(digits_teacher[1], weights)
    data = tmp_path / "digits.npz"
    shutil.copy(digits_npz, data)
    cfg = CompressConfig(
        **{**digits_options, "weights": str(weights), "data": str(data)},
        epochs=1, qat_epochs=1, max_accuracy_drop=100.0, sensitivity=False,
    )  # fmt: skip
    out = tmp_path / "run"
    ctx = open_run(cfg, out)
    run_in(ctx, "distill")
    return ctx.cfg, out


def test_inputs_are_fingerprinted_when_the_run_starts(distilled) -> None:
    _, out = distilled
    inputs = json.loads((out / "logs" / "inputs.json").read_text())
    assert set(inputs) == {"teacher", "data", "unlabeled", "target", "student", "calib_manifest"}
    assert all(len(inputs[k]) == 64 for k in ("teacher", "data", "target"))


def test_resume_with_other_epochs_is_refused(distilled) -> None:
    cfg, out = distilled
    before = (out / "config.json").read_text()
    with pytest.raises(BadInput, match=r"epochs \(1 → 2\).*use a new --out"):
        compress(replace(cfg, epochs=2), out, resume=True)
    assert (out / "config.json").read_text() == before


def test_resume_with_retrained_teacher_weights_is_refused(distilled) -> None:
    cfg, out = distilled
    state = torch.load(cfg.weights, weights_only=True)
    state["head.bias"] += 1.0  # the same file name, other contents
    torch.save(state, cfg.weights)
    with pytest.raises(BadInput, match="teacher file \\(contents changed\\)"):
        compress(cfg, out, resume=True)


def test_resume_with_changed_data_is_refused(distilled) -> None:
    cfg, out = distilled
    with np.load(cfg.data) as z:
        arrays = dict(z)
    arrays["y_train"][:10] = (arrays["y_train"][:10] + 1) % 10
    np.savez(cfg.data, **arrays)
    with pytest.raises(BadInput, match="data file \\(contents changed\\)"):
        compress(cfg, out, resume=True)


def test_resume_applies_a_change_to_a_stage_not_yet_run(distilled) -> None:
    cfg, out = distilled
    student = (out / "student.pt").read_bytes()
    report = compress(replace(cfg, qat_epochs=2, max_accuracy_drop=50.0), out, resume=True)
    assert (out / "student.pt").read_bytes() == student  # distill was not rerun
    assert len(report["training"]["qat"]) == 2
    saved = json.loads((out / "config.json").read_text())
    assert saved["qat_epochs"] == 2 and saved["max_accuracy_drop"] == 50.0
    # now quantize has run: another QAT schedule is refused, a validate setting still applies
    with pytest.raises(BadInput, match=r"qat_epochs \(2 → 3\)"):
        compress(replace(cfg, qat_epochs=3, max_accuracy_drop=50.0), out, resume=True)
    again = compress(replace(cfg, qat_epochs=2, max_accuracy_drop=60.0), out, resume=True)
    assert again["config"]["max_accuracy_drop"] == 60.0
    assert again["accuracy"] == report["accuracy"]


def test_cli_refusal_is_one_line_exit_2(distilled) -> None:
    cfg, out = distilled
    args = ["compress", "--teacher", cfg.teacher, "--weights", cfg.weights, "--data", cfg.data,
            "--target", cfg.target, "--mean", "0.3", "--std", "0.4", "--batch-size", "64",
            "--epochs", "3", "--qat-epochs", "1", "--no-sensitivity", "--out", str(out),
            "--resume"]  # fmt: skip
    result = CliRunner().invoke(app, args, env={"EDGEKD_DEBUG": None})
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgekd: error: --resume: "), lines
    assert "epochs (1 → 3)" in lines[0]
