#!/usr/bin/env python
"""The transfer-set case (Caruana et al. 2006; Hinton et al. 2015): few labels plus a large
unlabeled set that the teacher labels. The table in docs/benchmarks.md.

Fashion-MNIST: 1 % of the official train split keeps its labels (60 per class, class-balanced,
by ``--split-seed``); the other 99 % (59,400 images) are given as ``--unlabeled`` and labelled by
the teacher alone. The teacher is the bundled example's (FashionCNN, trained on the full labelled
split: the setting where a trained model exists and its training labels do not travel with it).
The student is the one edgekd sizes for the host-cpu target (the bundled example's). Every row runs
edgekd's ``distill`` stage (float training) and reports accuracy on the 10k official test images:

- labels only: cross-entropy on the 600 labelled images (``--labelled-epochs``, default 50: it
  is given far more passes than the transfer-set row, so it is not short of training);
- kd, labels only: the teacher's soft targets on the same 600 images;
- transfer set: the 600 labelled images plus the 59,400 teacher-labelled ones (``--epochs``).

Usage: python bench/transfer_set.py [--epochs 5] [--labelled-epochs 50] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from edgekd.config import EXAMPLE_MEAN, EXAMPLE_STD, EXAMPLE_TEACHER, CompressConfig
from edgekd.data import read_idx
from edgekd.pipeline import open_run, run_in

FASHION = Path("/usr/share/datasets/fashion-mnist")
ROWS = {  # row -> (CompressConfig fields, uses the unlabeled set)
    "labels only (CE)": ({"loss": "ce"}, False),
    "kd, labelled images only": ({"loss": "kd"}, False),
    "transfer set (kd, + 99 % teacher-labelled)": ({"loss": "kd"}, True),
}


def make_split(data: Path, out: Path, fraction: float, seed: int) -> tuple[Path, Path]:
    """The labelled NPZ (a class-balanced ``fraction`` of train; val = the official test set) and
    the unlabeled NPZ (the rest of train, images only)."""
    labelled, unlabeled = out / "labelled.npz", out / "unlabeled.npz"
    if labelled.exists() and unlabeled.exists():
        return labelled, unlabeled
    x = read_idx(data / "train-images-idx3-ubyte.gz")
    y = read_idx(data / "train-labels-idx1-ubyte.gz").astype(np.int64)
    rng = np.random.default_rng(seed)
    per_class = round(fraction * len(y) / 10)
    keep = np.sort(
        np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per_class] for c in range(10)])
    )
    rest = np.setdiff1d(np.arange(len(y)), keep)
    np.savez(
        labelled,
        x_train=x[keep],
        y_train=y[keep],
        x_val=read_idx(data / "t10k-images-idx3-ubyte.gz"),
        y_val=read_idx(data / "t10k-labels-idx1-ubyte.gz").astype(np.int64),
    )
    np.savez(unlabeled, x=x[rest])
    return labelled, unlabeled


def run_row(
    label: str, seed: int, args: argparse.Namespace, labelled: Path, unlabeled: Path
) -> dict:
    fields, transfer = ROWS[label]
    example = resources.files("edgekd.example")
    cfg = CompressConfig(
        teacher=EXAMPLE_TEACHER, weights=str(example / "teacher.pt"), data=str(labelled),
        mean=EXAMPLE_MEAN, std=EXAMPLE_STD, epochs=args.epochs if transfer else args.labelled_epochs,
        seed=seed, batch_size=128, lr=3e-3, cache_dir=str(args.out / "cache"),
        unlabeled=str(unlabeled) if transfer else None, **fields,
    )  # fmt: skip
    folder = args.out / "runs" / f"{list(ROWS).index(label)}-{seed}"
    t0 = time.perf_counter()
    ctx = open_run(cfg, folder, resume=True)
    run_in(ctx, "distill")
    record = ctx.run.record("distill")
    history = record["history"]
    return {
        "row": label,
        "seed": seed,
        "test_accuracy": history[-1]["val_accuracy"],
        "epochs": len(history),
        "steps": len(history) * -(-record["train_samples"] // cfg.batch_size),
        "train_samples": record["train_samples"],
        "student": ctx.run.record("sizing")["student"],
        "wall_seconds": time.perf_counter() - t0,
    }


def table(results: list[dict]) -> str:
    lines = [
        "| row | test accuracy % (mean ± std) | seeds | epochs | optimizer steps |",
        "|---|---|---|---|---|",
    ]
    for label in ROWS:
        rows = [r for r in results if r["row"] == label]
        if not rows:
            continue
        accs = [100 * r["test_accuracy"] for r in rows]
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        lines.append(
            f"| {label} | {statistics.mean(accs):.2f} ± {std:.2f} | {len(accs)} "
            f"| {rows[0]['epochs']} | {rows[0]['steps']:,} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=5, help="transfer-set row")
    p.add_argument("--labelled-epochs", type=int, default=50, help="the two labels-only rows")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rows", nargs="+", default=list(ROWS), help="row labels (default: all)")
    p.add_argument("--fraction", type=float, default=0.01, help="labelled share of train")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--data", type=Path, default=FASHION)
    p.add_argument("--out", type=Path, default=Path("bench-out/transfer"))
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    labelled, unlabeled = make_split(args.data, args.out, args.fraction, args.split_seed)
    results_path = args.out / "results.jsonl"
    done = set()
    if results_path.exists():
        done = {(r["row"], r["seed"]) for r in map(json.loads, results_path.open())}
    for seed in args.seeds:
        for label in args.rows:
            if (label, seed) in done:
                continue
            r = run_row(label, seed, args, labelled, unlabeled)
            print(json.dumps(r), flush=True)
            with results_path.open("a") as f:
                f.write(json.dumps(r) + "\n")
    md = table([json.loads(line) for line in results_path.open()])
    (args.out / "table.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
