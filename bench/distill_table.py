#!/usr/bin/env python
"""Every distillation loss on full Fashion-MNIST, same schedule, several seeds: the table in
docs/benchmarks.md.

Teacher: the bundled FashionCNN (1.17M parameters, 92.4 % on the 10k test set). Student:
``bench/students.py:convnet_half`` (18.5k parameters, 63x smaller). Every row runs edgekd's
``distill`` stage (float training only) on the 60k training images and reports accuracy on the 10k
test images. A second teacher for the ensemble row, a wider ConvNet of another architecture, is
trained here with cross-entropy and used as ONNX (logits only).

``--student NAME`` picks another student of bench/students.py (the long-schedule table uses
``convnet_example`` and ``convnet_quarter``); the second teacher is trained only when its row runs.
``--teacher FACTORY --teacher-weights PT`` distills from another teacher than the bundled one (the
stronger-teacher table uses a ``convnet_example`` trained alone for 30 epochs).

Usage: python bench/distill_table.py [--epochs 4] [--seeds 0 1 2] [--rows kd at ...] [--out DIR]
       [--student convnet_half] [--teacher FACTORY --teacher-weights PT]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from importlib import resources
from pathlib import Path

import torch

from edgekd.config import EXAMPLE_MEAN, EXAMPLE_STD, EXAMPLE_TEACHER, CompressConfig
from edgekd.data import load_dataset
from edgekd.distill.losses import make_objective
from edgekd.distill.trainer import TrainConfig, accuracy, fit, predict
from edgekd.export.onnx_export import export_onnx
from edgekd.models.students import ConvNet
from edgekd.pipeline import open_run, run_in

FASHION = "/usr/share/datasets/fashion-mnist"
STUDENTS = str(Path(__file__).with_name("students.py"))
ROWS = {  # row label -> CompressConfig fields
    "vanilla (CE only)": {"loss": "ce"},
    "kd": {"loss": "kd"},
    "dkd": {"loss": "dkd"},
    "dist": {"loss": "dist"},
    "fitnet": {"loss": "fitnet", "loss_weights": {"fitnet": 100.0}},  # the paper's weights,
    "at": {"loss": "at", "loss_weights": {"at": 1000.0}},  # no longer the defaults
    "rkd": {"loss": "rkd"},
    "sp": {"loss": "sp"},
    "cc": {"loss": "cc"},
    "kd+rkd": {"loss": "kd+rkd"},
    "two-teacher kd": {"loss": "kd", "ensemble": "TEACHER2"},
    # kd variants for long schedules: a lower temperature, an even CE/KL split
    "kd T=2": {"loss": "kd", "temperature": 2.0},
    "kd 0.5": {"loss": "kd", "loss_weights": {"kd": 0.5}},
    # feature losses below their paper weights (FitNet 100 and AT 1000 hurt a small student)
    "fitnet 10": {"loss": "fitnet", "loss_weights": {"fitnet": 10.0}},
    "fitnet 1": {"loss": "fitnet", "loss_weights": {"fitnet": 1.0}},
    "at 100": {"loss": "at", "loss_weights": {"at": 100.0}},
    "at 10": {"loss": "at", "loss_weights": {"at": 10.0}},
}


def second_teacher(out: Path, data_dir: str, epochs: int) -> Path:
    """A ConvNet(width 2, depth 1.5) trained with CE here, saved as ONNX: another architecture
    and another format than the first teacher."""
    path = out / "teacher2.onnx"
    if path.exists():
        return path
    data = load_dataset(data_dir, mean=EXAMPLE_MEAN, std=EXAMPLE_STD)
    torch.manual_seed(0)
    model = ConvNet(1, 10, width=2.0, depth=1.5)
    zeros = torch.zeros(len(data.train), 10)  # CE only: the teacher side is unused
    fit(model, data.train, zeros, make_objective("ce"), TrainConfig(epochs=epochs, lr=3e-3),
        device=torch.device("cpu"), label="teacher2")  # fmt: skip
    acc = accuracy(predict(model, data.val.x, torch.device("cpu")), data.val.y)
    export_onnx(model.eval(), data.val.x[:1], path)
    (out / "teacher2.json").write_text(
        json.dumps({"test_accuracy": acc, "params": sum(p.numel() for p in model.parameters())})
    )
    return path


def run_row(
    label: str, fields: dict, seed: int, args: argparse.Namespace, teacher2: Path | None
) -> dict:
    fields = dict(fields)
    if fields.get("ensemble") == "TEACHER2":
        fields["ensemble"] = [str(teacher2)]
    cfg = CompressConfig(
        teacher=args.teacher, weights=args.teacher_weights, data=args.data,
        mean=EXAMPLE_MEAN, std=EXAMPLE_STD, student=f"{STUDENTS}:{args.student}",
        epochs=args.epochs, seed=seed,
        batch_size=128, lr=3e-3, cache_dir=str(args.out / "cache"), **fields,
    )  # fmt: skip
    folder = args.out / "runs" / f"{re.sub(r'[^a-z0-9.]+', '-', label.lower()).strip('-')}-{seed}"
    t0 = time.perf_counter()
    ctx = open_run(cfg, folder, resume=True)
    run_in(ctx, "distill")
    record = ctx.run.record("distill")
    history = record["history"]
    train_s = sum(h["seconds"] for h in history)
    return {
        "row": label,
        "seed": seed,
        "test_accuracy": history[-1]["val_accuracy"],
        "train_seconds": train_s,
        "samples_per_s": len(history) * record["train_samples"] / train_s,
        "wall_seconds": time.perf_counter() - t0,
        "pairs": record["pairs"],
    }


def table(results: list[dict], teacher: str, teacher_acc: float, teacher2: dict | None) -> str:
    lines = [
        "| row | test accuracy % (mean ± std) | seeds | training samples/s |",
        "|---|---|---|---|",
    ]
    for label in ROWS:
        accs = [100 * r["test_accuracy"] for r in results if r["row"] == label]
        if not accs:
            continue
        sps = statistics.mean(r["samples_per_s"] for r in results if r["row"] == label)
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        lines.append(
            f"| {label} | {statistics.mean(accs):.2f} ± {std:.2f} | {len(accs)} | {sps:,.0f} |"
        )
    lines.append(f"| teacher ({teacher}) | {100 * teacher_acc:.2f} | - | - |")
    if teacher2:
        lines.append(
            f"| second teacher (ConvNet w2 d1.5, {teacher2['params']:,} params, ONNX) "
            f"| {100 * teacher2['test_accuracy']:.2f} | - | - |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rows", nargs="+", default=list(ROWS), help="row labels (default: all)")
    p.add_argument("--data", default=FASHION)
    p.add_argument("--out", type=Path, default=Path("bench-out/distill"))
    p.add_argument("--teacher2-epochs", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--student", default="convnet_half", help="a function of bench/students.py")
    p.add_argument("--teacher", default=EXAMPLE_TEACHER, help="MODULE:FACTORY or FILE.py:FACTORY")
    p.add_argument(
        "--teacher-weights", default=str(resources.files("edgekd.example") / "teacher.pt")
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    two_teachers = any(ROWS[r].get("ensemble") for r in args.rows)
    teacher2 = second_teacher(args.out, args.data, args.teacher2_epochs) if two_teachers else None
    results_path = args.out / "results.jsonl"
    done = set()
    if results_path.exists():
        done = {(r["row"], r["seed"]) for r in map(json.loads, results_path.open())}
    for seed in args.seeds:
        for label in args.rows:
            if (label, seed) in done:
                continue
            r = run_row(label, ROWS[label], seed, args, teacher2)
            print(json.dumps(r), flush=True)
            with results_path.open("a") as f:
                f.write(json.dumps(r) + "\n")
    results = [json.loads(line) for line in results_path.open()]
    data = load_dataset(args.data, mean=EXAMPLE_MEAN, std=EXAMPLE_STD)
    from edgekd.models.teacher import load_model

    teacher = load_model(args.teacher, args.teacher_weights)
    teacher_acc = accuracy(predict(teacher, data.val.x, torch.device("cpu")), data.val.y)
    params = sum(p.numel() for p in teacher.parameters())
    t2_json = args.out / "teacher2.json"
    t2 = json.loads(t2_json.read_text()) if t2_json.exists() else None
    md = table(results, f"{args.teacher.rsplit(':', 1)[-1]}, {params:,} params", teacher_acc, t2)
    (args.out / "table.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
