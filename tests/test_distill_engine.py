"""The distillation engine end to end on digits: feature and relation losses through both training
stages, ensembles of teachers in different formats, unlabeled transfer sets, two processes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.config import CompressConfig
from edgekd.export.onnx_export import export_onnx
from edgekd.models.teacher import load_model
from edgekd.pipeline import open_run, run_in

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FIVE_CLASSES = """
from torch import nn


def five():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 5))
"""


def cli(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], env={"EDGEKD_DEBUG": None})


@pytest.fixture(scope="module")
def base(digits_options, tmp_path_factory) -> dict:
    cache = tmp_path_factory.mktemp("cache")
    return {**digits_options, "epochs": 2, "qat_epochs": 1, "cache_dir": str(cache)}


@pytest.fixture(scope="module")
def onnx_teacher(digits_teacher, tmp_path_factory) -> Path:
    """The digits teacher as ONNX: a second ensemble member in another format."""
    source, weights = digits_teacher
    model = load_model(f"{source}:DigitsTeacher", weights).eval()
    path = tmp_path_factory.mktemp("onnx") / "teacher.onnx"
    export_onnx(model, torch.zeros(1, 1, 8, 8), path)
    return path


def distill(options: dict, out: Path, quantize: bool = False) -> dict:
    ctx = open_run(CompressConfig(**options), out)
    run_in(ctx, "distill")
    if quantize:
        run_in(ctx, "quantize")
    return ctx.run.record("distill")


@pytest.mark.parametrize("loss", ["kd+at", "fitnet", "sp", "rkd+cc", "dkd", "dist"])
def test_every_loss_trains_in_float_and_qat(base, tmp_path, loss) -> None:
    record = distill({**base, "loss": loss}, tmp_path / "run", quantize=True)
    last = record["history"][-1]
    assert record["terms"] == loss.split("+")
    assert all(np.isfinite(v) for v in last.values())
    for name in loss.split("+"):
        assert f"loss_{name}" in last
    if loss in ("kd+at", "fitnet", "sp"):
        assert record["pairing"] == "auto" and record["pairs"]
        for p in record["pairs"]:
            assert p["teacher"].startswith("body.") and p["student"].startswith("features.")
            assert p["teacher_shape"][1:] == p["student_shape"][1:] or loss == "fitnet"
    qat = (tmp_path / "run" / "logs" / "quantize.json").read_text()
    assert '"history"' in qat and (tmp_path / "run" / "student_qat.pt").exists()
    assert last["val_accuracy"] > 0.3  # two epochs on digits: learning, not converged


def test_given_pairs_are_used_and_reported(base, tmp_path) -> None:
    record = distill({**base, "loss": "at", "pairs": ["teacher.body.5=student.features.0"]},
                     tmp_path / "run")  # fmt: skip
    assert record["pairing"] == "given"
    assert [(p["teacher"], p["student"]) for p in record["pairs"]] == [
        ("body.5", "features.0.2")
    ]  # a container is tapped at its last leaf, the same point in the float and QAT graphs


def test_ensemble_of_a_module_and_an_onnx_teacher(base, onnx_teacher, tmp_path) -> None:
    options = {**base, "ensemble": [str(onnx_teacher)], "ensemble_weights": [0.5, 0.5]}
    record = distill(options, tmp_path / "run")
    assert len(record["teachers"]) == 2 and record["teachers"][1] == str(onnx_teacher)
    assert record["history"][-1]["val_accuracy"] > 0.5


def test_unlabeled_transfer_set_alone(base, digits_npz, tmp_path) -> None:
    with np.load(digits_npz) as z:
        np.savez(tmp_path / "unlabeled.npz", x=z["x_train"])
    options = {**base, "unlabeled": str(tmp_path / "unlabeled.npz"), "unlabeled_only": True,
               "epochs": 3}  # fmt: skip
    record = distill(options, tmp_path / "run")
    last = record["history"][-1]
    assert record["train_samples"] == 1397
    assert last["loss_ce"] == 0.0  # no labels: the teacher alone teaches
    assert last["val_accuracy"] > 0.5


def test_two_processes_match_one(base, tmp_path) -> None:
    options = {**base, "epochs": 3}
    one = distill(options, tmp_path / "one", quantize=True)
    two = distill({**options, "nproc": 2}, tmp_path / "two", quantize=True)
    a, b = one["history"][-1]["val_accuracy"], two["history"][-1]["val_accuracy"]
    # same global batches and averaged gradients; only BatchNorm sees half batches per process
    assert abs(a - b) <= 0.03, (a, b)
    assert (tmp_path / "two" / "student_qat.pt").exists()


def test_bad_distillation_inputs_are_one_line_exit_2(
    digits_options, onnx_teacher, tmp_path
) -> None:
    five = tmp_path / "five.py"
    five.write_text(FIVE_CLASSES)
    first = ["--teacher", digits_options["teacher"], "--weights", digits_options["weights"]]
    rest = ["--data", digits_options["data"], "--mean", "0.3", "--std", "0.4",
            "--target", digits_options["target"], "--epochs", "1"]  # fmt: skip
    cases = [
        ("valid: at, cc, dist, dkd, fitnet, kd, rkd, sp", [*first, "--loss", "kd+kdd"]),
        ("body.55", [*first, "--loss", "at", "--pair", "body.55=features.0"]),
        ("5 classes but the data has 10", [*first, "--teacher", f"{five}:five"]),
        ("module:factory", ["--teacher", str(onnx_teacher), "--loss", "fitnet"]),
        ("NAME=NUMBER", [*first, "--loss-weight", "at"]),
    ]
    for i, (says, extra) in enumerate(cases):
        out = tmp_path / f"out{i}"
        result = cli("distill", *extra, *rest, "--out", out)
        assert result.exit_code == 2, (says, result.output)
        lines = result.output.strip().splitlines()
        assert lines[-1].startswith("edgekd: error: ") and says in lines[-1], (says, lines)
        assert not out.exists()  # checked before the run folder is made
