#!/usr/bin/env python
"""edgekd kd vs torchdistill kd, side by side in one run: same teacher (bundled FashionCNN),
student (ConvNet width 0.5, depth 1), data (full Fashion-MNIST), loss (T=4, CE 0.1 / KL 0.9),
AdamW lr 3e-3, batch 128, warm-up + cosine, seeds and threads.

edgekd runs its ``distill`` stage here; torchdistill runs bench/peer_torchdistill.py in the peer
venv made by bench/setup_peer.sh. Each seed runs edgekd then torchdistill, back to back.
edgekd's training throughput excludes the one-time teacher cache fill, reported on its own;
torchdistill runs the teacher every step, which is its normal behaviour.

Usage: python bench/peer_compare.py [--epochs 4] [--seeds 0 1 2] [--peer .peer-venv/bin/python]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import time
from importlib import resources
from pathlib import Path

import torch

from edgekd.config import EXAMPLE_MEAN, EXAMPLE_STD, EXAMPLE_TEACHER, CompressConfig
from edgekd.pipeline import open_run, run_in

HERE = Path(__file__).parent
FASHION = "/usr/share/datasets/fashion-mnist"


def edgekd_kd(seed: int, args: argparse.Namespace) -> dict:
    example = resources.files("edgekd.example")
    out = args.out / f"edgekd-{seed}"
    shutil.rmtree(out, ignore_errors=True)
    cache = args.out / "cache"
    cfg = CompressConfig(
        teacher=EXAMPLE_TEACHER, weights=str(example / "teacher.pt"), data=args.data,
        mean=EXAMPLE_MEAN, std=EXAMPLE_STD, student=f"{HERE / 'students.py'}:convnet_half",
        loss="kd", temperature=4.0, alpha=0.9, epochs=args.epochs, lr=3e-3, batch_size=128,
        seed=seed, cache_dir=str(cache),
    )  # fmt: skip
    fill = cache.exists()
    t0 = time.perf_counter()
    ctx = open_run(cfg, out)
    run_in(ctx, "distill")
    wall = time.perf_counter() - t0
    record = ctx.run.record("distill")
    train_s = sum(h["seconds"] for h in record["history"])
    return {
        "tool": "edgekd",
        "test_accuracy": record["history"][-1]["val_accuracy"],
        "train_seconds": train_s,
        "samples_per_s": args.epochs * record["train_samples"] / train_s,
        "wall_seconds": wall,
        "cache": "hit" if fill else "filled in this run",
        "seed": seed,
    }


def torchdistill_kd(seed: int, args: argparse.Namespace) -> dict:
    argv = [args.peer, str(HERE / "peer_torchdistill.py"), "--epochs", str(args.epochs),
            "--width", "0.5", "--depth", "1", "--seed", str(seed), "--threads",
            str(args.threads), "--data", args.data]  # fmt: skip
    done = subprocess.run(argv, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--peer", default=".peer-venv/bin/python")
    p.add_argument("--data", default=FASHION)
    p.add_argument("--out", type=Path, default=Path("bench-out/peer"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:
        for run in (edgekd_kd, torchdistill_kd):
            r = run(seed, args)
            print(json.dumps(r), flush=True)
            rows.append(r)

    def stat(tool: str, key: str) -> tuple[float, float]:
        v = [r[key] for r in rows if r["tool"] == tool]
        return statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0

    ours, peer = stat("edgekd", "samples_per_s")[0], stat("torchdistill", "samples_per_s")[0]
    lines = [
        f"| tool | test accuracy % (mean ± std, {len(args.seeds)} seeds) | training samples/s |",
        "|---|---|---|",
    ]
    for tool in ("edgekd", "torchdistill"):
        acc, sd = stat(tool, "test_accuracy")
        lines.append(
            f"| {tool} | {100 * acc:.2f} ± {100 * sd:.2f} | {stat(tool, 'samples_per_s')[0]:,.0f} |"
        )
    lines.append(f"\nthroughput ratio edgekd / torchdistill: {ours / peer:.2f}x")
    md = "\n".join(lines)
    (args.out / "table.md").write_text(md + "\n")
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))
    print(md)


if __name__ == "__main__":
    main()
