"""The control arm: a paired bootstrap of the distillation gain, the baseline student trained on
labels alone from the distilled student's start and batches, its report fields and its gate."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
from test_html_report import _shows, parse
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.config import CompressConfig
from edgekd.distill.control import state_sha256
from edgekd.models.teacher import load_weights
from edgekd.pipeline import Context, compress, open_run, run_in
from edgekd.report.compare import load_runs, table
from edgekd.report.html import render_html
from edgekd.report.markdown import render_markdown
from edgekd.report.page import resolve
from edgekd.report.schema import load_schema
from edgekd.run import RunDir
from edgekd.stats import accuracy_gain, paired_bootstrap


def test_identical_predictions_gain_nothing_with_certainty() -> None:
    hits = np.random.default_rng(1).random(500) < 0.8
    gain = accuracy_gain(hits, hits)
    assert gain["gain_pt"] == 0.0 and gain["ci_pt"] == [0.0, 0.0]
    assert gain["only_model_correct"] == gain["only_reference_correct"] == 0
    assert gain["model_accuracy"] == gain["reference_accuracy"] == hits.mean()
    assert gain["samples"] == 500 and gain["resamples"] == 2000 and gain["confidence"] == 0.95


def test_interval_matches_the_normal_approximation_on_a_large_sample() -> None:
    # 4,000 paired samples: model alone right on 400, reference alone right on 200
    n, wins, losses = 4000, 400, 200
    a = np.zeros(n, bool)
    b = np.zeros(n, bool)
    a[:wins] = True
    b[wins : wins + losses] = True
    a[-1000:] = b[-1000:] = True  # both right: cancels out of the difference
    ci = paired_bootstrap(a, b, resamples=4000, seed=3)
    mean = (wins - losses) / n
    se = math.sqrt(((wins + losses) / n - mean**2) / n)  # sd of d in {-1, 0, 1}, over sqrt(n)
    assert ci.estimate == pytest.approx(mean)
    half = 1.959964 * se
    assert ci.low == pytest.approx(mean - half, abs=0.1 * half)
    assert ci.high == pytest.approx(mean + half, abs=0.1 * half)


def test_bootstrap_is_seeded_and_checks_its_arguments() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.random(300) < 0.7, rng.random(300) < 0.6
    assert paired_bootstrap(a, b, seed=5) == paired_bootstrap(a, b, seed=5)
    assert paired_bootstrap(a, b, seed=5) != paired_bootstrap(a, b, seed=6)
    with pytest.raises(ValueError):
        paired_bootstrap(a, b[:-1])
    with pytest.raises(ValueError):
        paired_bootstrap(a, b, confidence=1.0)


@pytest.fixture(scope="module")
def baseline_run(tmp_path_factory, digits_options, one_torch_thread) -> tuple[Path, dict]:
    """A short compress on digits with the control arm; random crops and mixup, so the teacher
    runs live and the batch digests cover augmented, mixed inputs and their mixed labels."""
    cfg = CompressConfig(
        **digits_options, epochs=2, qat_epochs=0, sensitivity=False, augment="crop+mixup",
        baseline=True, max_accuracy_drop=100.0,
    )  # fmt: skip
    out = tmp_path_factory.mktemp("baseline") / "run"
    return out, compress(cfg, out)


def _report(run: Path) -> dict:
    return json.loads((run / "report.json").read_text())


def _hits(model: torch.nn.Module, val) -> np.ndarray:
    with torch.no_grad():
        return (model.eval()(val.x).argmax(1) == val.y).numpy()


def test_baseline_starts_and_trains_like_the_distilled_arm(baseline_run) -> None:
    out, _ = baseline_run
    record = json.loads((out / "logs" / "baseline.json").read_text())
    gain, arms = record["gain"], record["gain"]["arms"]
    assert record["loss"] == "ce" and len(record["history"]) == 2
    assert gain["same_init"] is True and gain["same_batches"] is True
    assert arms["distilled"]["loss"] == "kd" and arms["baseline"]["loss"] == "ce"
    assert arms["distilled"]["batches"] == arms["baseline"]["batches"]
    assert arms["baseline"]["batches"]["batches"] == 2 * math.ceil(1397 / 64)
    distill = json.loads((out / "logs" / "distill.json").read_text())
    assert (distill["augment"], distill["mix_alpha"]) == ("crop+mixup", 1.0)
    # the shared start is the distilled arm's: a fresh student drawn with the run's seed
    ctx = Context(RunDir(out).config(), RunDir(out))
    torch.manual_seed(ctx.cfg.seed)
    assert state_sha256(ctx.new_student()) == arms["baseline"]["init_sha256"]
    assert arms["distilled"]["init_sha256"] == arms["baseline"]["init_sha256"]


def test_gain_is_the_saved_students_difference(baseline_run) -> None:
    out, report = baseline_run
    run = RunDir(out)
    ctx = Context(run.config(), run)
    baseline = ctx.new_student()
    load_weights(baseline, run.student_baseline_pt)
    distilled, base = _hits(ctx.trained_student(), ctx.data.val), _hits(baseline, ctx.data.val)
    assert not np.array_equal(distilled, base)  # two trainings, not one model twice
    gain = report["distillation_gain"]
    assert gain["distilled_accuracy"] == pytest.approx(distilled.mean())
    assert gain["baseline_accuracy"] == pytest.approx(base.mean())
    assert gain["gain_pt"] == pytest.approx(100 * (distilled.mean() - base.mean()))
    assert gain["ci_pt"][0] <= gain["gain_pt"] <= gain["ci_pt"][1]
    assert gain["only_distilled_correct"] == int((distilled & ~base).sum())
    assert gain["samples"] == 400 and gain["seed"] == 0
    assert "student_baseline.pt" in json.loads((out / "manifest.json").read_text())["artifacts"]


DROPOUT_STUDENT = """
from torch import nn


def net():
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Dropout(0.3),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 10),
    )
"""


def test_distilled_arm_is_the_run_without_baseline(tmp_path, digits_options) -> None:
    # dropout draws from the global generator: the control arm's draws must not shift them
    (tmp_path / "dropout_student.py").write_text(DROPOUT_STUDENT)
    student = f"{tmp_path / 'dropout_student.py'}:net"
    weights = {}
    for baseline in (False, True):
        cfg = CompressConfig(**digits_options, student=student, epochs=1, baseline=baseline)
        ctx = open_run(cfg, tmp_path / f"baseline-{baseline}")
        run_in(ctx, "distill")
        weights[baseline] = torch.load(ctx.run.student_pt, weights_only=True)
    assert weights[True].keys() == weights[False].keys()
    for k in weights[False]:
        assert torch.equal(weights[True][k], weights[False][k]), k


def test_report_json_carries_the_gain(baseline_run) -> None:
    _, report = baseline_run
    validator = jsonschema.Draft202012Validator(load_schema())
    assert [e.message for e in validator.iter_errors(report)] == []
    assert len(report["training"]["baseline"]) == 2
    assert report["distillation_gain"]["arms"]["baseline"]["loss"] == "ce"
    gated = [g["name"] for g in report["gates"]["records"]]
    assert "kd_gain" not in gated  # no --min-kd-gain: reported, not gated


def test_report_files_and_compare_show_the_gain(baseline_run, digits_run) -> None:
    out, report = baseline_run
    gain = report["distillation_gain"]
    interval = f"[{gain['ci_pt'][0]:+.2f}, {gain['ci_pt'][1]:+.2f}]"
    md = (out / "report.md").read_text()
    assert f"**{gain['gain_pt']:+.2f} pt**" in md and interval in md
    html = (out / "report.html").read_text()
    shown = {n.attrs["data-json"]: n.text() for n in parse(html).walk() if "data-json" in n.attrs}
    for ptr in ("gain_pt", "ci_pt/0", "ci_pt/1", "distilled_accuracy", "baseline_accuracy"):
        text = shown[f"/distillation_gain/{ptr}"]
        assert _shows(text, resolve(report, f"/distillation_gain/{ptr}")), (ptr, text)
    assert 'data-sources="/training/distill /training/baseline"' in html
    rows = {row[0]: row[1:] for row in table([out, digits_run], load_runs([out, digits_run]))}
    assert rows["distillation gain pt"] == [f"{gain['gain_pt']:+.2f}", "—"]
    assert rows["gain 95 % CI pt"] == [interval, "—"]


def test_report_says_when_the_teacher_has_nothing_to_transfer(baseline_run) -> None:
    _, report = baseline_run
    baseline = report["distillation_gain"]["baseline_accuracy"]
    for teacher, shown in ((baseline - 0.01, True), (baseline, True), (baseline + 0.01, False)):
        case = {**report, "accuracy": {**report["accuracy"], "teacher": teacher}}
        md, html = render_markdown(case), render_html(case)
        assert ("a stronger teacher, not another loss" in md) is shown, teacher
        assert ("a stronger teacher, not another loss" in html) is shown, teacher
        if shown:
            assert f"({100 * baseline:.2f} % vs {100 * teacher:.2f} %)" in md


def _gated(out: Path, tmp_path: Path, min_kd_gain: float) -> tuple[int, Path]:
    """Validate a copy of ``out`` with --min-kd-gain set: (exit code, the copy)."""
    copy = tmp_path / f"gated{min_kd_gain:+}"
    shutil.copytree(out, copy)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "min_kd_gain": min_kd_gain}))
    result = CliRunner().invoke(app, ["validate", str(copy), "--json"])
    summary = json.loads(result.stdout.splitlines()[0])
    assert summary["distillation_gain"] == _report(copy)["distillation_gain"]
    return result.exit_code, copy


def test_min_kd_gain_gates_the_point_estimate(baseline_run, tmp_path: Path) -> None:
    out, report = baseline_run
    gain = report["distillation_gain"]["gain_pt"]
    code, passed = _gated(out, tmp_path, gain - 0.01)
    records = _report(passed)["gates"]["records"]
    (i,) = [i for i, g in enumerate(records) if g["name"] == "kd_gain"]
    assert code == 0 and records[i]["status"] == "passed"
    assert records[i]["measured_on_target"] is None
    shown = f'data-json="/gates/records/{i}/evidence">{records[i]["evidence"]}<'
    assert shown in (passed / "report.html").read_text()
    code, failed = _gated(out, tmp_path, gain + 0.01)
    assert code == 3
    (record,) = [g for g in _report(failed)["gates"]["records"] if g["status"] == "failed"]
    assert record["name"] == "kd_gain"
    assert f"{gain:+.2f} pt" in record["evidence"] and "--min-kd-gain" in record["evidence"]


def test_resume_reuses_the_trained_baseline(baseline_run, tmp_path: Path) -> None:
    out, _ = baseline_run
    copy = tmp_path / "resumed"
    shutil.copytree(out, copy)
    stamp = (copy / "student_baseline.pt").stat().st_mtime_ns
    (copy / "student.pt").unlink()  # as if interrupted during the distilled arm
    ctx = open_run(RunDir(copy).config(), copy, resume=True)
    run_in(ctx, "distill")
    assert (copy / "student_baseline.pt").stat().st_mtime_ns == stamp
    before = json.loads((out / "logs" / "baseline.json").read_text())
    after = json.loads((copy / "logs" / "baseline.json").read_text())
    assert after["gain"]["gain_pt"] == pytest.approx(before["gain"]["gain_pt"])
    assert after["history"] == before["history"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--min-kd-gain", "0.5"], "--min-kd-gain gates the gain over a baseline student"),
        (["--baseline", "--loss", "ce"], "--loss ce is that already"),
        (["--baseline", "--min-kd-gain", "nan"], "must be a finite number"),
        (["--baseline", "--unlabeled", "x.npz", "--unlabeled-only"], "--unlabeled-only leaves"),
    ],
)
def test_bad_combinations_exit_2_before_anything_is_written(args, message, tmp_path) -> None:
    out = tmp_path / "never"
    result = CliRunner().invoke(app, ["compress", *args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_two_processes_train_both_arms(tmp_path, digits_options) -> None:
    cfg = CompressConfig(**digits_options, epochs=1, baseline=True, nproc=2, augment="cutmix")
    ctx = open_run(cfg, tmp_path / "ddp")
    run_in(ctx, "distill")
    record = json.loads((ctx.run.logs / "baseline.json").read_text())
    gain = record["gain"]
    assert gain["same_init"] is True and gain["same_batches"] is True
    # rank 0 hashes its half of each global batch: every batch, half the samples
    assert gain["arms"]["baseline"]["batches"]["batches"] == math.ceil(1397 / 64)
    assert ctx.run.student_baseline_pt.exists() and ctx.run.student_pt.exists()
    assert record["history"][-1]["val_accuracy"] > 0.2
