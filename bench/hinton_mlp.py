#!/usr/bin/env python
"""Hinton et al. (2015)'s MNIST setting on full Fashion-MNIST: test errors of the teacher
(784-1200-1200-10 with dropout), the student alone (784-800-800-10, cross-entropy) and the
student distilled at T=20 with edgekd's kd loss. Same optimizer and schedule for all three.

Usage: python bench/hinton_mlp.py [--epochs 12] [--seeds 0 1 2] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

from edgekd.config import EXAMPLE_MEAN, EXAMPLE_STD
from edgekd.data import load_dataset
from edgekd.distill.losses import make_objective
from edgekd.distill.trainer import TrainConfig, fit, predict

sys.path.insert(0, str(Path(__file__).parent))
from students import mlp_800, mlp_1200  # noqa: E402

FASHION = "/usr/share/datasets/fashion-mnist"
CPU = torch.device("cpu")


def errors(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    return int((predict(model, x, CPU).argmax(1) != y).sum())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--temperature", type=float, default=20.0)
    p.add_argument("--data", default=FASHION)
    p.add_argument("--out", type=Path, default=Path("bench-out/hinton"))
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    data = load_dataset(args.data, mean=EXAMPLE_MEAN, std=EXAMPLE_STD)
    train, test = data.train, data.val
    n = len(train)

    def cfg(seed: int) -> TrainConfig:
        return TrainConfig(epochs=args.epochs, lr=1e-3, batch_size=128, seed=seed)

    results: dict[str, list[int]] = {"teacher": [], "student alone": [], "student distilled": []}
    for seed in args.seeds:
        torch.manual_seed(seed)
        teacher = mlp_1200()
        fit(teacher, train, torch.zeros(n, 10), make_objective("ce"), cfg(seed), device=CPU,
            label=f"teacher s{seed}")  # fmt: skip
        results["teacher"].append(errors(teacher, test.x, test.y))
        soft = predict(teacher, train.x, CPU)  # dropout off: the teacher's soft targets

        torch.manual_seed(seed)
        alone = mlp_800()
        fit(alone, train, soft, make_objective("ce"), cfg(seed), device=CPU,
            label=f"alone s{seed}")  # fmt: skip
        results["student alone"].append(errors(alone, test.x, test.y))

        torch.manual_seed(seed)
        distilled = mlp_800()
        kd = make_objective("kd", temperature=args.temperature)
        fit(distilled, train, soft, kd, cfg(seed), device=CPU, label=f"kd s{seed}")
        results["student distilled"].append(errors(distilled, test.x, test.y))
        print(json.dumps({k: v[-1] for k, v in results.items()} | {"seed": seed}), flush=True)

    lines = [
        f"| model | test errors of 10,000 (mean ± std over {len(args.seeds)} seeds) | per seed |",
        "|---|---|---|",
    ]
    for name, errs in results.items():
        std = statistics.stdev(errs) if len(errs) > 1 else 0.0
        lines.append(f"| {name} | {statistics.mean(errs):.0f} ± {std:.0f} | {errs} |")
    md = "\n".join(lines)
    (args.out / "table.md").write_text(md + "\n")
    (args.out / "results.json").write_text(json.dumps(results))
    print(md)


if __name__ == "__main__":
    main()
