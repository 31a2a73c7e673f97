"""The ``edgekd`` command: a thin Typer shell over the Python API."""

from __future__ import annotations

import errno
import inspect
import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path
from typing import Annotated, Any

import typer

from edgekd.config import CompressConfig, quantize_changes
from edgekd.data import parse_floats
from edgekd.errors import BadInput, EdgekdError, GateFailed, first_line
from edgekd.quant.calibrators import CALIBRATORS
from edgekd.report.gates import failure_line

try:  # the base of click's usage errors: typer vendors click from 0.2x on
    from typer import TyperException as CommandLineError
except ImportError:  # older typer runs on click itself
    from click import ClickException as CommandLineError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Distil a teacher into a small INT8 student for an edge device, export it, and prove it.",
)
targets_app = typer.Typer(no_args_is_help=True, help="List and inspect target device profiles.")
app.add_typer(targets_app, name="targets")

_debug = False

Out = Annotated[Path, typer.Option("--out", "-o", help="Run folder.")]
Run = Annotated[Path, typer.Argument(help="A run folder made by compress or distill.")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON summary on stdout.")]


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    global _debug
    _debug = debug or bool(os.environ.get("EDGEKD_DEBUG"))


def _fail(e: BaseException, code: int) -> None:
    if _debug:
        raise e
    typer.echo(f"edgekd: error: {e}", err=True)
    raise typer.Exit(code)


def _guard(fn, *args, **kwargs) -> Any:
    """Call ``fn``; turn edgekd errors into one line and their exit code."""
    try:
        return fn(*args, **kwargs)
    except EdgekdError as e:
        _fail(e, e.exit_code)
    except KeyboardInterrupt:
        typer.echo("edgekd: interrupted; rerun with --resume to continue", err=True)
        raise typer.Exit(130) from None
    except OSError as e:
        if e.errno not in MACHINE_STATE:
            _internal(e)
        _fail(OSError(f"{e.filename}: {e.strerror}"), BadInput.exit_code)
    except Exception as e:  # noqa: BLE001 - the CLI's last line of defence
        _internal(e)


# A disk that fills up or turns read-only mid-run, or a file the user may not read or write, is
# the machine's state, not an edgekd defect.
MACHINE_STATE = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def _internal(e: BaseException) -> None:
    """An exception that no check classified: a defect in edgekd itself (exit 1)."""
    _fail(
        RuntimeError(
            f"internal error, a bug in edgekd: {type(e).__name__}: {first_line(e)} "
            "(rerun with --debug for the traceback)"
        ),
        1,
    )


def _size(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        values = [int(v) for v in text.replace("x", ",").split(",") if v.strip()]
    except ValueError:
        raise BadInput(f"--input-size {text!r}: expected H,W or one number") from None
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) < 1:
        raise BadInput(f"--input-size {text!r}: expected H,W or one number")
    return values


def _loss_weights(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise BadInput(f"--loss-weight {item!r}: expected NAME=NUMBER, e.g. at=10")
    return out


def _summary(report: dict[str, Any], out: Path) -> dict[str, Any]:
    keys = ("accuracy", "agreement", "params", "gates", "distillation_gain", "wall_seconds")
    summary = {
        "out": str(out),
        "target": report["target"]["name"],
        "student": report["student"]["label"],
    }
    summary.update({k: report[k] for k in keys if k in report})
    summary["latency_p90_ms"] = {k: v["p90"] for k, v in report["latency_ms"].items()}
    return summary


def _finish(report: dict[str, Any], out: Path, as_json: bool) -> None:
    summary = _summary(report, out)
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        typer.echo((out / "report.md").read_text(), err=True)
        typer.echo(f"run folder: {out}", err=True)
    if not report["gates"]["passed"]:
        _fail(GateFailed(failure_line(report["gates"])), GateFailed.exit_code)


def _config(**options: Any) -> CompressConfig:
    """A config from ``--config FILE`` (if given) overridden by the command-line options that were
    given (None = not given)."""
    from edgekd.config_file import load_config_file

    base = load_config_file(options["config"]) if options.get("config") else {}
    names = {f.name for f in fields(CompressConfig)}
    given = {k: v for k, v in options.items() if k in names and v is not None}
    teachers = options.get("teacher") or []
    if teachers:
        given["teacher"], given["ensemble"] = teachers[0], list(teachers[1:])
    for key in ("mean", "std", "ensemble_weights"):
        if key in given:
            given[key] = list(parse_floats(given[key]))
    if options.get("loss_weight"):
        given["loss_weights"] = _loss_weights(options["loss_weight"])
    if "input_size" in given:
        given["input_size"] = _size(given["input_size"])
    given.update(quantize_changes(bool(options.get("ptq")), qat_epochs=options.get("qat_epochs")))
    return CompressConfig(**{**base, **given})


Teacher = Annotated[
    list[str] | None,
    typer.Option(
        help="TorchScript, .pt2, .onnx, or module:factory / file.py:factory[@WEIGHTS]. "
        "Repeat for an ensemble: soft targets are averaged."
    ),
]
Weights = Annotated[str | None, typer.Option(help="state_dict for a module:factory teacher.")]
Data = Annotated[str | None, typer.Option(help="ImageFolder dir, .npz, or IDX dir.")]
Target = Annotated[
    str | None, typer.Option(help="Target name or profile .toml (default host-cpu).")
]
Student = Annotated[str | None, typer.Option(help="module:factory overriding the sized student.")]
Epochs = Annotated[int | None, typer.Option(help="Distillation epochs.")]
Lr = Annotated[float | None, typer.Option(help="Learning rate of the float stage.")]
Mean = Annotated[str | None, typer.Option(help="Per-channel mean, comma-separated.")]
Std = Annotated[str | None, typer.Option(help="Per-channel std, comma-separated.")]
InputSize = Annotated[str | None, typer.Option(help="Resize inputs to H,W.")]
Device = Annotated[str | None, typer.Option(help="auto, cpu or cuda[:N] for training.")]
Seed = Annotated[int | None, typer.Option(help="Random seed.")]
Resume = Annotated[bool, typer.Option(help="Continue the run in --out.")]
EnsembleWeights = Annotated[
    str | None, typer.Option(help="One weight per teacher, comma-separated (default: equal).")
]
Loss = Annotated[
    str | None,
    typer.Option(help="NAME[+NAME...]: kd, dkd, dist, fitnet, at, rkd, sp, cc (default kd)."),
]
LossWeight = Annotated[
    list[str] | None, typer.Option(help="NAME=WEIGHT for a loss term; repeatable.")
]
Pairs = Annotated[
    list[str] | None,
    typer.Option("--pair", help="teacher.MODULE=student.MODULE for feature losses; repeatable."),
]
Alpha = Annotated[float | None, typer.Option(help="kd weight; CE gets 1 - alpha.")]
Unlabeled = Annotated[
    str | None, typer.Option(help="Transfer set without labels (images, .npz or IDX).")
]
UnlabeledOnly = Annotated[
    bool | None, typer.Option("--unlabeled-only", help="Train on the transfer set alone.")
]
Baseline = Annotated[
    bool | None,
    typer.Option(
        "--baseline",
        help="Also train the same student on labels alone (same init, schedule and batches): "
        "the report gives the distillation gain with a 95 % confidence interval.",
    ),
]
Augment = Annotated[
    str | None,
    typer.Option(
        help="none, crop or crop+flip, each optionally +mixup or +cutmix (e.g. crop+flip+mixup, "
        "cutmix): drawn once per batch for student and teacher; the teacher runs live."
    ),
]
MixAlpha = Annotated[
    float | None, typer.Option(help="Beta(a, a) of the mixup/cutmix share (default 1.0).")
]
Optimizer = Annotated[str | None, typer.Option(help="adamw or sgd (Nesterov).")]
Nproc = Annotated[
    int | None, typer.Option(help="Training processes (DDP: gloo on CPU, NCCL on GPUs).")
]
CacheDir = Annotated[
    str | None, typer.Option(help="Teacher cache folder (default $EDGEKD_CACHE, ~/.cache/edgekd).")
]
Ptq = Annotated[
    bool, typer.Option("--ptq", help="Post-training quantization: calibrate only, no QAT epochs.")
]
CalibratorName = Annotated[
    str | None,
    typer.Option(
        "--calibrator",
        help=f"Activation ranges: {', '.join(CALIBRATORS)} (default: the scheme's).",
    ),
]

WeightBits = Annotated[
    int | None,
    typer.Option(
        "--weight-bits",
        help="Bits of the int8 weights: 8, or 7 where ONNX Runtime's u8s8 kernels saturate "
        "(default: 7 for host-cpu on an x86-64 CPU without VNNI, else 8).",
    ),
]


Options = dict[str, tuple[Any, Any]]  # parameter name -> (Annotated type, default)

# What compress and distill share: the inputs, the student and its distillation. Declared once
# here, so that the two commands cannot drift apart.
TRAINING: Options = {
    "teacher": (Teacher, None),
    "weights": (Weights, None),
    "data": (Data, None),
    "target": (Target, None),
    "out": (Out, Path("edgekd-run")),
    "student": (Student, None),
    "min_compression": (
        Annotated[float | None, typer.Option(help="Student at most teacher params / this.")],
        None,
    ),
    "epochs": (Epochs, None),
    "lr": (Lr, None),
    "batch_size": (Annotated[int | None, typer.Option(help="Training batch size.")], None),
    "temperature": (Annotated[float | None, typer.Option(help="KD temperature.")], None),
    "ensemble_weights": (EnsembleWeights, None),
    "loss": (Loss, None),
    "loss_weight": (LossWeight, None),
    "pairs": (Pairs, None),
    "alpha": (Alpha, None),
    "unlabeled": (Unlabeled, None),
    "unlabeled_only": (UnlabeledOnly, None),
    "baseline": (Baseline, None),
    "augment": (Augment, None),
    "mix_alpha": (MixAlpha, None),
    "optimizer": (Optimizer, None),
    "nproc": (Nproc, None),
    "cache_dir": (CacheDir, None),
    "mean": (Mean, None),
    "std": (Std, None),
    "input_size": (InputSize, None),
    "device": (Device, None),
    "seed": (Seed, None),
    "resume": (Resume, False),
}

# compress alone: a config file to replay, the quantization, export and validation stages, gates.
COMPRESS: Options = {
    "config": (
        Annotated[
            Path | None,
            typer.Option(
                "--config",
                help="TOML run config (e.g. a run's config.toml, to replay it); options given "
                "here override it.",
            ),
        ],
        None,
    ),
    "qat_epochs": (
        Annotated[int | None, typer.Option(help="Quantization-aware fine-tuning epochs.")],
        None,
    ),
    "ptq": (Ptq, False),
    "calibrator": (CalibratorName, None),
    "weight_bits": (WeightBits, None),
    "calib_samples": (
        Annotated[
            int | None, typer.Option(help="Random training images to calibrate on (default 512).")
        ],
        None,
    ),
    "calib_manifest": (
        Annotated[
            str | None, typer.Option(help="TOML listing the training indices to calibrate on.")
        ],
        None,
    ),
    "keep_float": (
        Annotated[
            str | None,
            typer.Option(
                help="Leave the N most quantization-sensitive layers in float, or 'auto': those "
                "that cost accuracy, and on host targets those whose INT8 version is slower, "
                "timed on ONNX Runtime (FP16 on TensorRT, fp32 on ONNX Runtime)."
            ),
        ],
        None,
    ),
    "sensitivity": (
        Annotated[
            bool | None,
            typer.Option(
                "--sensitivity/--no-sensitivity",
                help="Before QAT, score each layer quantized alone (the report's ranking; "
                "--keep-float needs it); skip it to save its time.",
            ),
        ],
        None,
    ),
    "max_accuracy_drop": (
        Annotated[float | None, typer.Option(help="Gate: points below the teacher.")],
        None,
    ),
    "min_kd_gain": (
        Annotated[
            float | None,
            typer.Option(
                help="Gate (with --baseline): least distillation gain over the baseline, points "
                "(its point estimate; the report shows the 95 % interval).",
            ),
        ],
        None,
    ),
    "int8_must_pay": (
        Annotated[
            bool | None,
            typer.Option(
                "--int8-must-pay/--allow-slower-int8",
                help="Gate: fail when INT8 is not faster than float (allow it when INT8 is for "
                "size).",
            ),
        ],
        None,
    ),
    "as_json": (Json, False),
}


def _with_options(*tables: Options) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command (its body takes ``**options``) the options of ``tables``, in order."""

    def declare(command: Callable[..., None]) -> Callable[..., None]:
        params = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=tp, default=default)
            for table in tables
            for name, (tp, default) in table.items()
        ]
        command.__signature__ = inspect.Signature(params, return_annotation=None)
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return declare


@app.command()
@_with_options(TRAINING, COMPRESS)
def compress(**options: Any) -> None:
    """Distil, fine-tune quantization-aware, export and validate (no --teacher/--data: the bundled example)."""
    from edgekd.pipeline import compress as run_compress

    out = options["out"]
    cfg = _guard(_config, **options)
    report = _guard(run_compress, cfg, out, resume=options["resume"])
    if report is not None:  # None: a torchrun rank other than 0, which only trains
        _finish(report, out, options["as_json"])


@app.command()
@_with_options(TRAINING)
def distill(**options: Any) -> None:
    """Create a run folder, size the student and distil it (student.pt)."""
    from edgekd.pipeline import open_run, run_in

    cfg = _guard(_config, **options)
    ctx = _guard(open_run, cfg, options["out"], resume=options["resume"])
    _guard(run_in, ctx, "distill")
    _guard(ctx.run.write_manifest)
    typer.echo(f"wrote {ctx.run.student_pt}", err=True)


def _stage(stage: str, run: Path, changes: dict[str, Any] | None = None, **options: Any) -> Any:
    from edgekd.pipeline import run_stage

    return _guard(run_stage, stage, run, changes, **options)


@app.command()
def quantize(
    run: Run, ptq: Ptq = False, calibrator: CalibratorName = None, weight_bits: WeightBits = None
) -> None:
    """Calibrate and fine-tune the distilled student quantization-aware (student_qat.pt).

    --ptq, --calibrator and --weight-bits change the run's saved config, for this stage and the
    later ones.
    """
    _stage("quantize", run, _guard(quantize_changes, ptq, calibrator, weight_bits=weight_bits))


@app.command("export")
def export_(run: Run) -> None:
    """Export teacher.onnx, student_fp32.onnx and student_int8.onnx (Q/DQ)."""
    _stage("export", run)


Remote = Annotated[
    str | None, typer.Option("--remote", help="Measure on this device over SSH: USER@HOST[:PORT].")
]
SshKey = Annotated[Path | None, typer.Option("--ssh-key", help="Private key for --remote.")]
HostKey = Annotated[
    str | None,
    typer.Option(
        "--host-key",
        help="Pin the device's host key: a known_hosts file or 'TYPE BASE64' "
        "(default: your known_hosts).",
    ),
]
RemotePython = Annotated[
    str | None,
    typer.Option(
        "--remote-python", envvar="EDGEKD_REMOTE_PYTHON", help="Python on the device (python3)."
    ),
]
ConnectTimeout = Annotated[
    float | None, typer.Option("--connect-timeout", help="Seconds to connect (10).")
]
StepTimeout = Annotated[
    float | None, typer.Option("--timeout", help="Seconds for one step on the device (900).")
]


def _ssh_target(
    remote: str | None,
    ssh_key: Path | None,
    host_key: str | None,
    remote_python: str | None,
    connect_timeout: float | None,
    timeout: float | None,
) -> Any:
    """The parsed --remote options (an SshTarget), or None without --remote."""
    from edgekd.runners.remote import SshTarget

    if remote is None:
        if ssh_key is not None or host_key is not None:
            raise BadInput("--ssh-key and --host-key go with --remote USER@HOST[:PORT]")
        return None
    return SshTarget.parse(
        remote,
        key=ssh_key,
        host_key=host_key,
        python=remote_python,
        connect_timeout_s=connect_timeout,
        timeout_s=timeout,
    )


@app.command()
def validate(
    run: Run,
    remote: Remote = None,
    ssh_key: SshKey = None,
    host_key: HostKey = None,
    remote_python: RemotePython = None,
    connect_timeout: ConnectTimeout = None,
    timeout: StepTimeout = None,
    as_json: Json = False,
) -> None:
    """Measure accuracy and latency of the exported models; gates decide the exit code."""
    target = _guard(_ssh_target, remote, ssh_key, host_key, remote_python, connect_timeout, timeout)
    report = _stage("validate", run, remote=target)
    _finish(report, run, as_json)


def _bench(model: Path, target: str, remote: Any) -> dict[str, Any]:
    from edgekd.bench import bench as run_bench
    from edgekd.targets import load_target

    return run_bench(model, load_target(target), remote)


@app.command()
def bench(
    model: Annotated[Path, typer.Argument(help="An .onnx model.")],
    target: Annotated[
        str, typer.Option(help="Target name or profile .toml: runtime and latency method.")
    ] = "host-cpu",
    remote: Remote = None,
    ssh_key: SshKey = None,
    host_key: HostKey = None,
    remote_python: RemotePython = None,
    connect_timeout: ConnectTimeout = None,
    timeout: StepTimeout = None,
    as_json: Json = False,
) -> None:
    """Single-stream latency of one model, here or on a device over SSH (--remote)."""
    ssh = _guard(_ssh_target, remote, ssh_key, host_key, remote_python, connect_timeout, timeout)
    summary = _guard(_bench, model, target, ssh)
    if as_json:
        typer.echo(json.dumps(summary))
        return
    lat = summary["latency_ms"]
    typer.echo(
        f"{model.name}: p50 {lat['p50']:.3f} ms, p90 {lat['p90']:.3f} ms, p99 {lat['p99']:.3f} ms,"
        f" mean {lat['mean']:.3f} ms ({lat['n']} queries, batch {summary['batch']})"
    )
    typer.echo(lat["where"])
    if "engine" in summary and summary["engine"]["int8_coverage"]["coverage"] is not None:
        typer.echo(f"INT8 coverage: {summary['engine']['int8_coverage']['coverage']:.0%}")


def _drift_table(drift: dict[str, Any]) -> list[str]:
    from edgekd.report.drift import HEADER, NUMERIC, drift_rows, drift_summary

    rows = [HEADER, *drift_rows(drift)]
    widths = [max(map(len, column)) for column in zip(*rows, strict=True)]

    def line(row: list[str]) -> str:
        cells = zip(row, widths, NUMERIC, strict=True)
        return "  ".join(c.rjust(w) if n else c.ljust(w) for c, w, n in cells).rstrip()

    return [*map(line, rows), drift_summary(drift)]


@app.command()
def diff(
    run: Run,
    samples: Annotated[int, typer.Option(help="Validation samples to compare on.")] = 256,
    top: Annotated[int, typer.Option(help="Layers to list, most drift first.")] = 5,
    as_json: Json = False,
) -> None:
    """Per-layer drift of the INT8 model in ONNX Runtime from the fake-quant student (logs/drift.json)."""
    from edgekd.diff import diff_run

    result = _guard(diff_run, run, samples=samples, top=top)
    saved = run / "logs" / "drift.json"
    typer.echo(f"wrote {saved} (edgekd validate adds it to the report)", err=True)
    if as_json:
        typer.echo(json.dumps(result))
        return
    for row in _drift_table(result):
        typer.echo(row)


def _lint(model: Path, target: str) -> tuple[list[Any], int, int]:
    from edgekd.export.lint import MIN_OPSET, lint_tensorrt, load_onnx, qdq_counts
    from edgekd.targets import load_target

    profile = load_target(target)
    if profile.quant_scheme != "tensorrt":
        what = (
            "runs FP16 and has no Q/DQ rules to check"
            if profile.quant_scheme == "none"
            else f'uses the "{profile.quant_scheme}" quantization scheme'
        )
        raise BadInput(
            f"target {profile.name} {what}; lint knows only the TensorRT rules so far "
            f"(Q/DQ int8 symmetric, opset >= {MIN_OPSET}): use a TensorRT INT8 target"
        )
    proto = load_onnx(model)
    return lint_tensorrt(proto), *qdq_counts(proto)


@app.command()
def lint(
    model: Annotated[Path, typer.Argument(help="An exported .onnx model with Q/DQ nodes.")],
    target: Annotated[str, typer.Option(help="Target name or profile .toml (TensorRT INT8).")],
    as_json: Json = False,
) -> None:
    """Check an INT8 ONNX model against the target runtime's Q/DQ rules; exit 3 on violations."""
    violations, pairs, layers = _guard(_lint, model, target)
    if as_json:
        found = [asdict(v) for v in violations]
        typer.echo(json.dumps({"model": str(model), "target": target, "violations": found}))
    elif violations:
        for v in violations:
            typer.echo(str(v))
    else:
        typer.echo(f"clean: {pairs} Q/DQ pairs, {layers} quantized Conv/Gemm")
    if violations:
        rules = sorted({v.rule for v in violations})
        message = (
            f"{len(violations)} TensorRT Q/DQ rule violation(s) in {model}: {', '.join(rules)}"
        )
        _fail(GateFailed(message), GateFailed.exit_code)


def _roofline(model: Path, targets: list[str]) -> list[dict[str, Any]]:
    from edgekd.roofline import load_cost, roofline
    from edgekd.targets import list_targets, load_target

    cost = load_cost(model)
    profiles = [load_target(t) for t in targets] if targets else list_targets()
    rows = []
    for t in profiles:
        est = roofline(cost, t)
        rows.append(
            est or {"target": t.name, "precision": cost.precision_on(t), "latency_ms": None}
        )
    return rows


@app.command()
def roofline(
    model: Annotated[Path, typer.Argument(help="An exported .onnx model (float or Q/DQ).")],
    target: Annotated[
        list[str] | None, typer.Option(help="Target name or .toml (repeatable; default: all).")
    ] = None,
    as_json: Json = False,
) -> None:
    """Estimated batch-1 latency per target: MACs and bytes counted in the ONNX graph against
    the target's datasheet peak rate and bandwidth (the roofline), plus the profile's
    per-inference and per-layer overheads (an estimate, not a measurement)."""
    rows = _guard(_roofline, model, target or [])
    if as_json:
        typer.echo(json.dumps({"model": str(model), "estimated": True, "targets": rows}))
        return
    typer.echo(
        "| target | precision | MACs | MB moved | peak TOPS | GB/s | roofline ms | bound | layers "
        "| overhead ms | estimated ms |"
    )
    typer.echo("|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|")
    for r in rows:
        if r["latency_ms"] is None:
            typer.echo(
                f"| {r['target']} | {r['precision']} | no {r['precision']} peak in the profile |"
            )
            continue
        typer.echo(
            f"| {r['target']} | {r['precision']} | {r['macs']:,} | {r['bytes'] / 1e6:.3f} | "
            f"{r['peak_tops']:g} | {r['bandwidth_gbs']:g} | {r['latency_ms']:.4f} | {r['bound']} | "
            f"{r['layers']} | {r['overhead_ms']:.4f} | {r['estimate_ms']:.4f} |"
        )


def _build_engine(model: Path, target: str, out: Path | None, dla: bool) -> dict[str, Any]:
    from edgekd.export.tensorrt import build_engine
    from edgekd.targets import load_target

    return build_engine(model, load_target(target), out, dla=dla)


@app.command("build-engine")
def build_engine_(
    model: Annotated[Path, typer.Argument(help="An exported .onnx model (Q/DQ for INT8).")],
    target: Annotated[str, typer.Option(help="Target name or profile .toml (TensorRT).")],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Folder for the engine (default: the model's)."),
    ] = None,
    dla: Annotated[
        bool, typer.Option("--dla", help="Run on DLA core 0, GPU fallback on (targets with DLA).")
    ] = False,
    as_json: Json = False,
) -> None:
    """Build a TensorRT engine on the device; report how much of it runs INT8."""
    summary = _guard(_build_engine, model, target, out, dla)
    if as_json:
        typer.echo(json.dumps(summary))
        return
    cov = summary["int8_coverage"]
    typer.echo(f"wrote {summary['engine']} ({summary['builder']} {summary['tensorrt']})", err=True)
    if cov["coverage"] is None:
        typer.echo("INT8 coverage: unknown (no detailed compute layers)")
    else:
        typer.echo(
            f"INT8 coverage: {cov['int8_layers']}/{cov['compute_layers']} compute layers "
            f"({cov['coverage']:.0%})"
        )
    for layer in cov["not_int8"]:
        typer.echo(f"  not INT8: {layer['name']} ({layer['type']}, {layer['precision']})")


@app.command()
def report(run: Run) -> None:
    """Rewrite report.md and report.html from RUN/report.json (and that in the current schema
    version); the exit code follows the saved gates."""
    from edgekd.report.files import regenerate

    saved = _guard(regenerate, run)
    typer.echo(f"wrote {run / 'report.md'} and {run / 'report.html'}", err=True)
    if not saved["gates"]["passed"]:
        _fail(GateFailed(failure_line(saved["gates"])), GateFailed.exit_code)


def _compare(runs: list[Path], html: Path | None, md: Path | None) -> str:
    from edgekd.atomic import write_text
    from edgekd.report.compare import load_runs, render_html, render_markdown, table

    rows = table(runs, load_runs(runs))
    markdown = render_markdown(rows)
    if md is not None:
        write_text(md, markdown)
    if html is not None:
        write_text(html, render_html(rows))
    return markdown


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Two or more run folders with report.json.")],
    html: Annotated[Path | None, typer.Option(help="Also write the table as HTML here.")] = None,
    md: Annotated[Path | None, typer.Option(help="Also write the Markdown table here.")] = None,
) -> None:
    """Several runs (say, one per target) side by side: one Markdown table on stdout."""
    typer.echo(_guard(_compare, runs, html, md), nl=False)


@targets_app.command("list")
def targets_list(as_json: Json = False) -> None:
    """The bundled target profiles."""
    from edgekd.targets import list_targets

    targets = _guard(list_targets)
    if as_json:
        typer.echo(json.dumps([t.name for t in targets]))
        return
    width = max(len(t.name) for t in targets)
    for t in targets:
        typer.echo(f"{t.name:<{width}}  {t.runtime:<11}  {t.precision:<4}  {t.description}")


@targets_app.command("show")
def targets_show(name: Annotated[str, typer.Argument(help="Target name or .toml path.")]) -> None:
    """Every field of one target profile, as JSON."""
    from edgekd.targets import load_target

    target = _guard(load_target, name)
    typer.echo(json.dumps(asdict(target), indent=2, default=str))


def main() -> None:
    """The console script: a usage error (unknown option, unparsable value) is one line, exit 2,
    like every other bad input."""
    try:
        code = app(standalone_mode=False)
    except CommandLineError as e:
        code = e.exit_code
        ctx = getattr(e, "ctx", None)
        if type(e).__name__ != "NoArgsIsHelpError":  # a bare command has printed its help
            where = f"; see {ctx.command_path} --help" if ctx else ""
            message = first_line(e.format_message()).rstrip(".")
            typer.echo(f"edgekd: error: {message}{where}", err=True)
    except typer.Abort:
        typer.echo("edgekd: interrupted", err=True)
        code = 130
    except BrokenPipeError:
        code = 1
    sys.exit(code if isinstance(code, int) else 0)
