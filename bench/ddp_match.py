#!/usr/bin/env python
"""One process vs two data-parallel processes (DDP, gloo on CPU), same run otherwise: the final
test accuracy of each and their difference, on full Fashion-MNIST.

Teacher: the bundled FashionCNN; student bench/students.py:convnet_half; kd; AdamW lr 3e-3, global
batch 128 (64 per process with two), warm-up + cosine. Both runs share one teacher cache, filled
before either is timed. The only intended difference: BatchNorm sees each process's half batch.

Usage: python bench/ddp_match.py [--epochs 2] [--seed 0] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
from importlib import resources
from pathlib import Path

from edgekd.config import EXAMPLE_MEAN, EXAMPLE_STD, EXAMPLE_TEACHER, CompressConfig
from edgekd.pipeline import open_run, run_in

HERE = Path(__file__).parent
FASHION = "/usr/share/datasets/fashion-mnist"


def run(nproc: int, args: argparse.Namespace) -> dict:
    example = resources.files("edgekd.example")
    out = args.out / f"nproc{nproc}"
    shutil.rmtree(out, ignore_errors=True)
    cfg = CompressConfig(
        teacher=EXAMPLE_TEACHER, weights=str(example / "teacher.pt"), data=args.data,
        mean=EXAMPLE_MEAN, std=EXAMPLE_STD, student=f"{HERE / 'students.py'}:convnet_half",
        loss="kd", epochs=args.epochs, lr=3e-3, batch_size=128, seed=args.seed, nproc=nproc,
        cache_dir=str(args.out / "cache"),
    )  # fmt: skip
    ctx = open_run(cfg, out)
    run_in(ctx, "distill")
    history = ctx.run.record("distill")["history"]
    return {
        "nproc": nproc,
        "test_accuracy": history[-1]["val_accuracy"],
        "train_seconds": sum(h["seconds"] for h in history),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=FASHION)
    p.add_argument("--out", type=Path, default=Path("bench-out/ddp"))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [run(1, args), run(2, args)]
    diff = 100 * (rows[1]["test_accuracy"] - rows[0]["test_accuracy"])
    lines = ["| processes | test accuracy % | training s |", "|---|---|---|"]
    lines += [
        f"| {r['nproc']} | {100 * r['test_accuracy']:.2f} | {r['train_seconds']:.0f} |"
        for r in rows
    ]
    lines.append(f"\ntwo processes - one process: {diff:+.2f} pt")
    md = "\n".join(lines)
    (args.out / "table.md").write_text(md + "\n")
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))
    print(md)


if __name__ == "__main__":
    main()
