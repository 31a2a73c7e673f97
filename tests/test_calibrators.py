"""Activation-range calibrators on known distributions; --calibrator and --ptq through the CLI;
calibration sets too small to trust."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from edgekd.calibration import MIN_CALIB_SAMPLES
from edgekd.cli import _config, app
from edgekd.config import CompressConfig
from edgekd.errors import BadInput
from edgekd.models.students import StudentSpec, build_student
from edgekd.pipeline import run_stage
from edgekd.quant.calibrators import CALIBRATORS, get_calibrator, quantization_mse
from edgekd.quant.fakequant import ActFakeQuant
from edgekd.quant.prepare import act_quantizers, prepare_qat
from edgekd.quant.scheme import SCHEMES
from edgekd.report.schema import load_schema

pytestmark = pytest.mark.usefixtures("one_torch_thread")

INT8, UINT8 = (-128, 127), (0, 255)
NAMES = "max, percentile, entropy, mse"


def _ranges(x: torch.Tensor, q: tuple[int, int]) -> dict[str, tuple[float, float]]:
    lo, hi = x.min().item(), x.max().item()
    return {name: c.find_range(x, lo, hi, *q) for name, c in CALIBRATORS.items()}


def _errors(x: torch.Tensor, q: tuple[int, int], ranges: dict) -> dict[str, float]:
    return {name: quantization_mse(x, *r, *q) for name, r in ranges.items()}


@pytest.fixture(scope="module")
def outliers() -> torch.Tensor:
    """100k standard-normal values and three at 1000."""
    x = torch.randn(100_000, generator=torch.Generator().manual_seed(0))
    x[:3] = 1000.0
    return x


# --- the calibrators -----------------------------------------------------------------------


@pytest.mark.parametrize("q", [INT8, UINT8])
def test_outliers_set_max_but_not_percentile_or_entropy(outliers, q) -> None:
    r = _ranges(outliers, q)
    assert r["max"][1] == 1000.0
    assert 3.0 < r["percentile"][1] < 5.0  # N(0, 1): the 99.99th percentile is 3.7
    assert 3.0 < r["entropy"][1] < 200.0
    errors = _errors(outliers, q, r)
    # mse counts the clipped outliers' error too: cutting 3 of 100k costs more than a coarser grid,
    # so it keeps (nearly) the whole range, and its error is the least of the four
    assert r["mse"][1] > 900.0
    assert errors["mse"] <= errors["max"]
    assert errors["mse"] < 0.1 * min(errors["percentile"], errors["entropy"])


@pytest.mark.parametrize("q", [INT8, UINT8])
def test_mse_clips_a_heavy_tail_with_less_error_than_max(q) -> None:
    g = torch.Generator().manual_seed(0)
    # Student's t with 2 degrees of freedom: a normal over sqrt(chi2(2) / 2)
    x = torch.randn(100_000, generator=g) / torch.rand(100_000, generator=g).log().neg().sqrt()
    r = _ranges(x, q)
    errors = _errors(x, q, r)
    width = {name: hi - lo for name, (lo, hi) in r.items()}
    assert width["mse"] < 0.9 * width["max"]
    assert errors["mse"] < 0.92 * errors["max"]
    assert errors["mse"] == min(errors.values())


@pytest.mark.parametrize(
    ("q", "low"), [(INT8, -3.0), (UINT8, -3.0), (UINT8, 0.0)], ids=["int8", "uint8", "uint8>=0"]
)
def test_uniform_data_keeps_nearly_the_whole_range(q, low) -> None:
    x = low + (3.0 - low) * torch.rand(100_000, generator=torch.Generator().manual_seed(1))
    for name, (lo, hi) in _ranges(x, q).items():
        assert hi > 0.95 * x.max().item(), name
        assert lo <= 0.95 * x.min().item() or low == 0.0, name


def test_act_fake_quant_turns_the_calibrators_range_into_scale_and_zero_point(outliers) -> None:
    scales = {}
    for name in CALIBRATORS:
        q = ActFakeQuant(*INT8, name)
        q.observing = True
        q(outliers)
        q.finalize()
        assert q.zero_point.item() == 0
        scales[name] = q.scale.item()
    assert scales["max"] == pytest.approx(1000.0 / 127)
    assert scales["percentile"] < 0.01 * scales["max"]
    assert scales["entropy"] < 0.2 * scales["max"]
    q = ActFakeQuant(*UINT8, "max")  # asymmetric: [-1, 3] onto 0..255
    q.observing = True
    q(torch.linspace(-1.0, 3.0, 1000))
    q.finalize()
    assert q.scale.item() == pytest.approx(4.0 / 255)
    assert q.zero_point.item() == 64  # round(1 / (4 / 255))


def test_prepare_qat_places_the_named_calibrator_or_the_schemes() -> None:
    model = build_student(StudentSpec("convnet", 0.5, 1.0), 1, 10).eval()
    scheme = SCHEMES["tensorrt"]
    assert {q.calibrator for q in act_quantizers(prepare_qat(model, scheme, "mse"))} == {"mse"}
    default = {q.calibrator for q in act_quantizers(prepare_qat(model, scheme))}
    assert default == {scheme.calibrator}


def test_labels_and_unknown_names() -> None:
    assert get_calibrator("percentile").label == "percentile 99.99"
    assert get_calibrator("entropy").label == "entropy"
    with pytest.raises(BadInput, match=f"unknown calibrator 'kl'; valid: {NAMES}$"):
        get_calibrator("kl")
    with pytest.raises(BadInput, match="unknown calibrator 'kl'"):
        ActFakeQuant(*INT8, "kl")
    with pytest.raises(BadInput, match="unknown calibrator 'kl'"):
        CompressConfig(teacher="t.pt", data="d.npz", calibrator="kl").resolved()


def test_ptq_on_the_command_line_means_no_qat_epochs() -> None:
    assert _config(ptq=True, calibrator="mse").qat_epochs == 0
    assert _config(ptq=True, calibrator="mse").calibrator == "mse"
    with pytest.raises(BadInput, match="--ptq runs no QAT epochs; drop --qat-epochs 2"):
        _config(ptq=True, qat_epochs=2)


# --- the CLI on a digits run ---------------------------------------------------------------


def cli(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], env={"EDGEKD_DEBUG": None})


def bad_input(result, *needles: str) -> str:
    """Assert exit 2 with one ``edgekd: error:`` line holding every needle; return it."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgekd: error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def digits_args(digits_options) -> list[str]:
    """distill/compress options for a one-epoch digits run."""
    o = digits_options
    return [
        "--teacher", o["teacher"], "--weights", o["weights"], "--data", o["data"],
        "--target", o["target"], "--mean", "0.3", "--std", "0.4", "--epochs", "1",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def distilled(tmp_path_factory, digits_args) -> Path:
    """A run folder with a distilled student.pt (not quantized yet)."""
    out = tmp_path_factory.mktemp("calibrators") / "distilled"
    result = cli("distill", *digits_args, "--out", out)
    assert result.exit_code == 0, (result.output, result.exception)
    return out


@pytest.fixture
def run_copy(distilled, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(distilled, out)
    return out


def test_quantize_ptq_entropy_is_recorded_and_reported(run_copy) -> None:
    result = cli("quantize", run_copy, "--ptq", "--calibrator", "entropy")
    assert result.exit_code == 0, (result.output, result.exception)
    assert (run_copy / "student_qat.pt").is_file()
    record = json.loads((run_copy / "logs" / "quantize.json").read_text())
    assert record["ptq"] is True and record["history"] == []
    assert record["calibration"]["method"] == "entropy"
    assert record["calibration"]["samples"] == 512
    config = json.loads((run_copy / "config.json").read_text())
    assert config["calibrator"] == "entropy" and config["qat_epochs"] == 0
    run_stage("export", run_copy)
    report = run_stage("validate", run_copy)
    assert report["quantization"]["ptq"] is True
    assert report["quantization"]["calibration"]["method"] == "entropy"
    jsonschema.validate(report, load_schema())


def test_unknown_calibrator_on_quantize_changes_nothing(run_copy) -> None:
    before = snapshot(run_copy)
    bad_input(cli("quantize", run_copy, "--calibrator", "kl"), "unknown calibrator 'kl'", NAMES)
    assert snapshot(run_copy) == before


def test_too_small_calibration_set_on_an_existing_run_changes_nothing(run_copy) -> None:
    before = snapshot(run_copy)
    with pytest.raises(BadInput, match="needs at least 32 samples; --calib-samples gives 8$"):
        run_stage("quantize", run_copy, {"calib_samples": 8, "qat_epochs": 0})
    assert snapshot(run_copy) == before


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--calibrator", "kl"], ["unknown calibrator 'kl'", NAMES]),
        (["--ptq", "--qat-epochs", "2"], ["--ptq runs no QAT epochs"]),
        (["--calib-samples", "5"], [f"at least {MIN_CALIB_SAMPLES} samples", "gives 5"]),
        (["manifest", "[]"], [f"at least {MIN_CALIB_SAMPLES} samples", "lists 0"]),
        (["manifest", "[1, 2, 3]"], [f"at least {MIN_CALIB_SAMPLES} samples", "lists 3"]),
        (["train", "20"], [f"at least {MIN_CALIB_SAMPLES} samples", "training split has only 20"]),
    ],
    ids=[
        "unknown calibrator", "ptq with qat epochs", "5 samples", "empty manifest", "3 indices",
        "20 training images",
    ],
)  # fmt: skip
def test_compress_refuses_before_the_run_folder_exists(
    digits_args, digits_options, tmp_path, extra, needles
) -> None:
    if extra[0] == "manifest":
        manifest = tmp_path / "calib.toml"
        manifest.write_text(f"indices = {extra[1]}\n")
        extra = ["--calib-manifest", manifest]
    elif extra[0] == "train":
        with np.load(digits_options["data"]) as z:
            arrays = dict(z)
        n = int(extra[1])
        small = tmp_path / "small.npz"
        np.savez(
            small, **{**arrays, "x_train": arrays["x_train"][:n], "y_train": arrays["y_train"][:n]}
        )
        extra = ["--data", small]
    out = tmp_path / "run"
    bad_input(cli("compress", *digits_args, "--out", out, *extra), *needles)
    assert not out.exists()


def test_calibration_sample_is_bounded_and_shared_evenly_by_the_batches() -> None:
    q = ActFakeQuant(*INT8, "max")
    q.observing = True
    for i in range(40):  # 40 x 200k values, over the 4 x 2^20 kept at most
        q(torch.full((200_000,), float(i)))
    sizes = [len(c) for c in q._samples]
    assert sum(sizes) <= 4 * (1 << 20) and len(set(sizes)) == 1
    assert [c[0].item() for c in q._samples] == [float(i) for i in range(40)]
    q.finalize()
    assert q.scale.item() == pytest.approx(39.0 / 127)


def test_calibration_is_reproducible(outliers) -> None:
    scales = []
    for _ in range(2):
        q = ActFakeQuant(*INT8, "percentile")
        q.observing = True
        for _ in range(3):
            q(torch.cat([outliers] * 2))  # 200k values a batch: sampled
        q.finalize()
        scales.append(q.scale.item())
    assert scales[0] == scales[1]


def test_entropy_is_not_pulled_down_by_relu_zeros() -> None:
    """Half the values of a ReLU output are exact zeros: that spike must not decide the clip."""
    x = torch.relu(torch.randn(200_000, generator=torch.Generator().manual_seed(0)))
    for q in (INT8, UINT8):
        lo, hi = get_calibrator("entropy").find_range(x, 0.0, x.max().item(), *q)
        assert lo == 0.0 and 0.75 * x.max().item() < hi <= x.max().item(), q


def test_entropy_keeps_a_normalised_images_background_and_most_of_its_range() -> None:
    """uint8 on signed data whose most common value is its minimum (the background of a
    normalised image): the minimum is kept, only the top of the range may be clipped."""
    g = torch.Generator().manual_seed(0)
    pixels = -0.81 + 2.83 * torch.rand(100_000, generator=g) ** 2
    x = torch.cat([torch.full((100_000,), -0.81), pixels])
    lo, hi = get_calibrator("entropy").find_range(x, x.min().item(), x.max().item(), *UINT8)
    assert lo == pytest.approx(-0.81) and 0.75 * x.max().item() < hi <= x.max().item()
