#!/usr/bin/env python
"""The long-schedule distillation table of docs/benchmarks.md from ``distill_table.py`` results.

Each ``--group LABEL DIR [DIR ...]`` gathers the ``results.jsonl`` of runs of one student and one
teacher (the seeds of a row may have run in several folders, as separate processes). Every row is
given as mean ± std over its seeds, per seed, and paired by seed against the student trained on
labels alone ("vanilla (CE only)"). A group without a vanilla row is paired with the previous
group's: the labels-only run does not use the teacher, so it is the same run for any teacher.

Usage: python bench/paired_table.py --group "convnet_quarter" bench-out/long-quarter
       [--group "convnet_quarter, stronger teacher" bench-out/long-quarter-strong ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

VANILLA = "vanilla (CE only)"


def load(dirs: list[Path]) -> dict[str, dict[int, float]]:
    """Row -> seed -> test accuracy %, over the folders' results.jsonl."""
    rows: dict[str, dict[int, float]] = {}
    for d in dirs:
        for line in (d / "results.jsonl").read_text().splitlines():
            r = json.loads(line)
            seeds = rows.setdefault(r["row"], {})
            if r["seed"] in seeds:
                raise SystemExit(f"{d}: row {r['row']!r} seed {r['seed']} ran twice")
            seeds[r["seed"]] = 100 * r["test_accuracy"]
    return rows


def table(groups: list[tuple[str, dict[str, dict[int, float]]]]) -> str:
    lines = [
        "| student | row | test accuracy % (mean ± std) | per seed | vs vanilla, paired by seed |",
        "|---|---|---|---|---|",
    ]
    control: dict[int, float] = {}
    for label, rows in groups:
        control = rows.get(VANILLA, control)
        for row, by_seed in rows.items():
            seeds = sorted(by_seed)
            accs = [by_seed[s] for s in seeds]
            std = f"{statistics.stdev(accs):.2f}" if len(accs) > 1 else "-"
            per_seed = ", ".join(f"{a:.2f}" for a in accs)
            paired = "-"
            if row != VANILLA and all(s in control for s in seeds):
                diffs = [by_seed[s] - control[s] for s in seeds]
                each = ", ".join(f"{d:+.2f}" for d in diffs)
                paired = f"{statistics.mean(diffs):+.2f} pt ({each})"
            lines.append(
                f"| {label} | {row} | {statistics.mean(accs):.2f} ± {std} | {per_seed} "
                f"(seeds {', '.join(map(str, seeds))}) | {paired} |"
            )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--group", nargs="+", action="append", required=True, metavar="LABEL DIR")
    args = p.parse_args()
    groups = []
    for label, *dirs in args.group:
        if not dirs:
            raise SystemExit(f"--group {label!r} names no result folder")
        groups.append((label, load([Path(d) for d in dirs])))
    print(table(groups))


if __name__ == "__main__":
    main()
