"""Run configs as TOML: config.toml in every run folder replays it; bad files fail clearly."""

from __future__ import annotations

import json
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.config import CompressConfig
from edgekd.config_file import config_toml, load_config_file
from edgekd.pipeline import open_run
from edgekd.run import RunDir

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def captured(monkeypatch) -> list[CompressConfig]:
    """Configs the CLI hands to the pipeline; the pipeline itself does not run."""
    seen: list[CompressConfig] = []

    def fake(cfg, out, resume=False):
        seen.append(cfg)
        cfg.resolved()  # the real one checks the config first, too
        return None  # what a torchrun rank other than 0 returns: the CLI prints nothing

    monkeypatch.setattr("edgekd.pipeline.compress", fake)
    return seen


def _cli(*args: str | Path):
    return CliRunner().invoke(app, [str(a) for a in args], env={"EDGEKD_DEBUG": None})


def test_run_folder_has_a_config_toml_equal_to_config_json(digits_run: Path) -> None:
    run = RunDir(digits_run)
    assert CompressConfig(**load_config_file(run.config_toml)) == run.config()
    manifest = json.loads((digits_run / "manifest.json").read_text())
    assert {"config.toml", "report.html"} <= set(manifest["artifacts"])


def test_replayed_config_gives_the_same_resolved_config(
    digits_run: Path, tmp_path: Path, captured
) -> None:
    result = _cli("compress", "--config", digits_run / "config.toml", "--out", tmp_path / "again")
    assert result.exit_code == 0, result.output
    (cfg,) = captured
    assert cfg.resolved() == RunDir(digits_run).config()
    # the replay's own run folder records the very same config, in both forms
    ctx = open_run(cfg, tmp_path / "again")
    assert ctx.run.config() == RunDir(digits_run).config()
    assert ctx.run.config_toml.read_text() == (digits_run / "config.toml").read_text()


def test_command_line_options_override_the_file(digits_run: Path, tmp_path, captured) -> None:
    result = _cli(
        "compress", "--config", digits_run / "config.toml", "--epochs", "7", "--ptq",
        "--target", "raspberry-pi-5", "--loss-weight", "kd=0.5", "--out", tmp_path / "x",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (cfg,) = captured
    original = RunDir(digits_run).config()
    expected = replace(
        original, epochs=7, qat_epochs=0, target="raspberry-pi-5", loss_weights={"kd": 0.5}
    )
    assert cfg.resolved() == expected


def test_a_config_written_by_hand(tmp_path: Path, captured) -> None:
    path = tmp_path / "run.toml"
    path.write_text('target = "jetson-orin-nano-8gb"\nepochs = 2\nlr = 1\nmean = [0.5]\n'
                    'loss = "kd+at"\n[loss_weights]\nat = 500\n')  # fmt: skip
    assert _cli("compress", "--config", path).exit_code == 0
    (cfg,) = captured
    assert (cfg.target, cfg.epochs, cfg.lr, cfg.mean) == ("jetson-orin-nano-8gb", 2, 1.0, [0.5])
    assert cfg.loss_weights == {"at": 500.0} and isinstance(cfg.lr, float)
    assert cfg.teacher is None  # the bundled example, as without --config


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("epochs = 3\nepoch = 4\n", "unknown key(s) epoch"),
        ('epochs = "ten"\n', 'epochs must be an integer, got "ten"'),
        ("epochs = 2.5\n", "epochs must be an integer, got 2.5"),
        ("lr = true\n", "lr must be a number, got true"),
        ('mean = ["a"]\n', "mean must be a list of numbers"),
        ("ensemble = 'x'\n", "ensemble must be a list of strings"),
        ("[loss_weights]\nat = 'big'\n", "loss_weights must be a table of numbers"),
        ("epochs = \n", "not a readable TOML file"),
        ("epochs = 0\n", "--epochs must be at least 1"),
    ],
)
def test_bad_config_file_is_one_line_and_exit_2(tmp_path: Path, captured, text, says) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    result = _cli("compress", "--config", path, "--out", tmp_path / "out")
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgekd: error: ") and says in lines[0], lines
    assert not (tmp_path / "out").exists()


def test_missing_config_file(tmp_path: Path, captured) -> None:
    result = _cli("compress", "--config", tmp_path / "nope.toml")
    assert result.exit_code == 2 and "no such file" in result.stderr


def test_awkward_values_survive_the_round_trip() -> None:
    cfg = CompressConfig(
        teacher='dir with "quotes"\\and\tback\\slashes/ünï\x7fcode.py:f',
        data="data.npz",
        ensemble=["a.onnx", "b.pt@w.pt"],
        ensemble_weights=[0.7, 0.3],
        loss_weights={"kd": 0.9, "odd key": 1e-05},
        input_size=[28, 28],
        qat_lr=1e-07,
        max_accuracy_drop=0.0,
        keep_float="auto",
        int8_must_pay=False,
    )
    text = config_toml(cfg)
    assert CompressConfig(**tomllib.loads(text)) == cfg
