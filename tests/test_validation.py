"""The validation layer: config values (Python API, --config, CLI), --out, calibration manifests,
user factories, and how the CLI classifies what escapes (exit 2 bad input, 1 an edgekd defect)."""

from __future__ import annotations

import errno
import math
import os
import sys
import warnings
from pathlib import Path

import pytest
import torch
import typer
from torch import nn

from edgekd.calibration import read_manifest
from edgekd.cli import _config, _guard, main
from edgekd.config import CompressConfig
from edgekd.errors import BadInput
from edgekd.models.teacher import load_model, load_weights
from edgekd.validation import check_out

NAN, INF = math.nan, math.inf


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"lr": NAN}, "--lr must be a finite number above 0 (got nan)"),
        ({"lr": INF}, "--lr must be a finite number above 0 (got inf)"),
        ({"lr": 0.0}, "--lr must be a finite number above 0"),
        ({"temperature": NAN}, "--temperature must be a finite number above 0 (got nan)"),
        ({"max_accuracy_drop": NAN}, "--max-accuracy-drop must be a finite number in [0, 100]"),
        ({"max_accuracy_drop": -1.0}, "--max-accuracy-drop must be a finite number in [0, 100]"),
        ({"qat_lr": -INF}, "--qat-lr must be a finite number above 0"),
        ({"alpha": 1.5}, "--alpha must be a finite number in [0, 1] (got 1.5)"),
        ({"min_compression": NAN}, "--min-compression must be a finite number above 0"),
        ({"val_fraction": 1.0}, "--val-fraction must be a finite number in (0, 1)"),
        ({"epochs": 0}, "--epochs must be at least 1 (got 0)"),
        ({"epochs": 2.5}, "--epochs 2.5: expected integer"),
        ({"epochs": True}, "--epochs true: expected integer"),
        ({"qat_epochs": -1}, "--qat-epochs must be 0 or more"),
        ({"batch_size": 0}, "--batch-size must be at least 1"),
        ({"seed": -1}, "--seed must be an integer from 0 to"),
        ({"seed": 2**70}, "--seed must be an integer from 0 to"),
        ({"lr": "0.1"}, '--lr "0.1": expected number'),
        ({"std": [0.5, 0.0]}, "--std values must be positive and finite"),
        ({"mean": [NAN]}, "--mean values must be finite"),
        ({"mean": []}, "--mean: give at least one value"),
        ({"input_size": [28]}, "--input-size [28]: expected H,W"),
        ({"input_size": [0, 28]}, "--input-size values must be at least 1"),
        ({"loss_weights": {"at": INF}}, "--loss-weight values must be non-negative and finite"),
        ({"ensemble_weights": [1.0, -1.0]}, "--ensemble-weights values must be non-negative"),
        ({"weight_bits": 4}, "--weight-bits 4: valid: 7, 8"),
        ({"optimizer": "adam"}, '--optimizer "adam": valid: adamw, sgd'),
        ({"augment": "flip"}, '--augment "flip": valid: none, crop, crop+flip'),
        ({"family": "vit"}, '--family "vit": valid: auto, convnet'),
        ({"device": "gpu"}, '--device "gpu": expected auto, cpu, cuda or cuda:N'),
        ({"loss": "kd+xx"}, "unknown loss 'xx'"),
        ({"keep_float": "-2"}, "--keep-float '-2': expected a layer count"),
        ({"calibrator": "kl"}, "unknown calibrator 'kl'"),
        ({"pairs": ["layer1"]}, "bad --pair 'layer1'"),
        ({"target": ""}, '--target "": expected a non-empty string'),
        ({"data": "a\x00b.npz"}, "without NUL characters"),
        ({"ensemble": ["ok.onnx", " "]}, '--ensemble " ": expected a non-empty string'),
    ],
    ids=lambda v: str(v)[:40],
)
def test_bad_values_are_refused_when_the_config_is_built(values, says) -> None:
    with pytest.raises(BadInput) as e:
        CompressConfig(**values)
    assert says in str(e.value)
    assert "\n" not in str(e.value)


def test_good_values_pass_and_ints_count_as_numbers() -> None:
    cfg = CompressConfig(lr=1, temperature=2, max_accuracy_drop=0, device="cuda:1", seed=2**63 - 1)
    assert cfg.lr == 1 and cfg.device == "cuda:1"


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"ensemble_weights": [1.0, 1.0]}, "gives 2 weight(s) for 1 teacher(s)"),
        ({"ensemble_weights": [0.0]}, "need a positive sum"),
        ({"unlabeled_only": True}, "--unlabeled-only needs --unlabeled"),
        ({"keep_float": "2", "sensitivity": False}, "drop --no-sensitivity"),
    ],
)
def test_fields_that_do_not_fit_together_are_refused_on_resolving(values, says) -> None:
    cfg = CompressConfig(teacher="t.onnx", data="d.npz", weight_bits=8, **values)
    with pytest.raises(BadInput, match=says.replace("(", r"\(").replace(")", r"\)")):
        cfg.resolved()


@pytest.mark.parametrize("key", ["lr", "temperature", "max_accuracy_drop"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_config_file_values_go_through_the_same_checks(tmp_path, key, value) -> None:
    path = tmp_path / "run.toml"
    path.write_text(f"{key} = {value}\n")
    with pytest.raises(BadInput, match=f"--{key.replace('_', '-')} must be a finite number"):
        _config(config=path)


def test_cli_values_go_through_the_same_checks() -> None:
    with pytest.raises(BadInput, match="--lr must be a finite number above 0 .got nan."):
        _config(lr=NAN)


# --- --out -------------------------------------------------------------------------------------


def test_out_naming_a_file(tmp_path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(BadInput, match="exists and is not a folder"):
        check_out(tmp_path / "f")
    with pytest.raises(BadInput, match=f"run: {tmp_path / 'f'} is a file, not a folder$"):
        check_out(tmp_path / "f" / "run")


def test_out_holding_a_run_needs_resume(tmp_path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(BadInput, match="already holds a run; pass --resume"):
        check_out(tmp_path)
    check_out(tmp_path, resume=True)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through file permissions")
def test_out_in_a_read_only_folder(tmp_path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(BadInput, match="cannot create files in"):
        check_out(locked / "run")


@pytest.mark.skipif(
    not Path("/proc/self").is_dir(), reason="needs /proc (no files can be made there)"
)
def test_out_on_a_file_system_that_refuses_writes() -> None:
    with pytest.raises(BadInput, match=r"--out /proc/edgekd-run: cannot create files in /proc"):
        check_out("/proc/edgekd-run")


def test_a_usable_out_leaves_nothing_behind(tmp_path) -> None:
    check_out(tmp_path / "new" / "run")
    assert list(tmp_path.iterdir()) == []


# --- calibration manifests -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("indices = [0, -1]", "index -1 is outside the training split (0..99)"),
        ("indices = [0, 100]", "index 100 is outside the training split (0..99)"),
        ("indices = [0, 1.5]", "index 1.5 is not an integer"),
        ('indices = [0, "3"]', "index '3' is not an integer"),
        ("indices = [true]", "index True is not an integer"),
        ("indices = [[1, 2]]", "index [1, 2] is not an integer"),
        ("indices = [4, 4]", "index 4 is listed twice"),
        ('indices = "0-10"', "expected indices = [...]"),
        ("samples = [1]", "expected indices = [...]"),
        ("indices = [1", "not a readable TOML file"),
        ("x = " + "[" * 5000 + "]" * 5000, "not a readable TOML file"),
        ('sha256 = "00"\nindices = [1]', "made for another data file"),
        ("sha256 = 5\nindices = [1]", "sha256 must be a string"),
    ],
    ids=lambda v: v[:30],
)
def test_calibration_manifest_refusals(tmp_path, body, says) -> None:
    manifest, data = tmp_path / "calib.toml", tmp_path / "data.npz"
    manifest.write_text(body + "\n")
    data.write_bytes(b"data")
    with pytest.raises(BadInput) as e:
        read_manifest(manifest, data, 100)
    assert says in str(e.value) and str(manifest) in str(e.value)


def test_calibration_manifest_reads_back_its_indices(tmp_path) -> None:
    import hashlib

    data = tmp_path / "data.npz"
    data.write_bytes(b"data")
    manifest = tmp_path / "calib.toml"
    manifest.write_text(f'sha256 = "{hashlib.sha256(b"data").hexdigest()}"\nindices = [3, 0, 99]\n')
    assert read_manifest(manifest, data, 100) == [3, 0, 99]
    with pytest.raises(BadInput, match="no such file"):
        read_manifest(tmp_path / "none.toml", data, 100)
    with pytest.raises(BadInput, match="is not a file"):
        read_manifest(manifest, tmp_path, 100)


# --- user factories and checkpoints ----------------------------------------------------------


def test_a_factory_that_raises_is_bad_input_naming_it(tmp_path) -> None:
    source = tmp_path / "mine.py"
    source.write_text("def build():\n    raise ValueError('no such width: 7')\n")
    spec = f"{source}:build"
    with pytest.raises(BadInput) as e:
        load_model(spec, role="student")
    assert str(e.value) == f"student factory {spec} raised ValueError: no such width: 7"


class Hooked(nn.Linear):
    def _load_from_state_dict(self, *args, **kwargs) -> None:
        raise RuntimeError("checksum mismatch")


def test_a_checkpoint_that_fails_to_load_is_bad_input_naming_it(tmp_path) -> None:
    model = Hooked(2, 2)
    path = tmp_path / "w.pt"
    torch.save(model.state_dict(), path)
    with pytest.raises(BadInput, match=r"w.pt: loading it into Hooked failed: RuntimeError: che"):
        load_weights(model, path)


# --- how the CLI classifies what escapes ------------------------------------------------------


def _exit(capsys, fn) -> tuple[int, list[str]]:
    with pytest.raises(typer.Exit) as e:
        _guard(fn)
    return e.value.exit_code, capsys.readouterr().err.splitlines()


def test_a_full_disk_is_not_an_edgekd_defect(capsys) -> None:
    def write() -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "run/student.pt")

    assert _exit(capsys, write) == (2, ["edgekd: error: run/student.pt: No space left on device"])


def test_anything_unclassified_is_an_edgekd_defect(capsys) -> None:
    def bug() -> None:
        raise KeyError("oops")

    code, lines = _exit(capsys, bug)
    assert code == 1 and len(lines) == 1
    assert lines[0].startswith("edgekd: error: internal error, a bug in edgekd: KeyError")


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["compress", "--lr", "abc"], "Invalid value for '--lr'"),
        (["compress", "--bogus"], "No such option: --bogus"),
        (["validate"], "Missing argument"),
    ],
)
def test_usage_errors_are_one_line_exit_2(monkeypatch, capsys, argv, says) -> None:
    monkeypatch.setattr(sys, "argv", ["edgekd", *argv])
    with pytest.raises(SystemExit) as e:
        main()
    lines = capsys.readouterr().err.splitlines()
    assert e.value.code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("edgekd: error: ") and says in lines[0] and "--help" in lines[0]


def test_a_file_the_user_may_not_read_is_not_an_edgekd_defect(capsys) -> None:
    def read() -> None:
        raise PermissionError(errno.EACCES, "Permission denied", "data/x.npz")

    assert _exit(capsys, read) == (2, ["edgekd: error: data/x.npz: Permission denied"])


def test_a_torchscript_teacher_loads_without_a_warning_on_stderr(tmp_path) -> None:
    path = tmp_path / "t.pt"
    torch.jit.script(nn.Linear(2, 2)).save(str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert isinstance(load_model(str(path)), torch.jit.ScriptModule)


def test_the_bundled_example_calibrates_on_its_manifest_unless_told_a_count() -> None:
    from edgekd.config import EXAMPLE_CALIB_SAMPLES, CompressConfig

    assert CompressConfig().resolved().calib_manifest.endswith("fashion-mnist-example.toml")
    assert CompressConfig(calib_samples=EXAMPLE_CALIB_SAMPLES).resolved().calib_manifest
    assert CompressConfig(calib_samples=128).resolved().calib_manifest is None


def test_a_loss_weight_for_a_term_not_in_the_loss_is_refused(digits_options) -> None:
    from edgekd.config import CompressConfig
    from edgekd.errors import BadInput

    cfg = CompressConfig(**digits_options, loss="kd+at", loss_weights={"at": 500.0, "rkd": 1.0})
    with pytest.raises(
        BadInput, match=r"'rkd' is not a term of --loss kd\+at \(its terms: kd, at\)"
    ):
        cfg.resolved()
    CompressConfig(**digits_options, loss="kd+at", loss_weights={"at": 500.0}).resolved()


def test_alpha_without_a_kd_term_is_refused(digits_options) -> None:
    from edgekd.config import CompressConfig
    from edgekd.errors import BadInput

    with pytest.raises(BadInput, match="--alpha 0.5 is the kd weight, and --loss dist has no kd"):
        CompressConfig(**digits_options, loss="dist", alpha=0.5).resolved()
    CompressConfig(**digits_options, loss="dist+kd", alpha=0.5).resolved()
    CompressConfig(**digits_options, loss="dist").resolved()  # the default alpha: nothing set
