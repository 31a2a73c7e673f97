#!/usr/bin/env python
"""Fuzz edgekd's parsers with Hypothesis and count the outcomes: the Fuzzing table in
docs/benchmarks.md.

The parsers and their inputs are those of tests/test_fuzz_parsers.py (tests/fuzz_inputs.py):
target profiles (mutated bundled ones and made-up TOML), target names, run configs (--config),
NPZ, IDX (raw and gzip) and ImageFolder data with corrupt, truncated, empty and non-image
files, and --unlabeled inputs (any of those three). Per parser it prints how many examples
ran, how many parsed to a valid object, how many were refused with one line (BadInput, exit 2
at the CLI) and how many let anything else escape, with the first example of each kind of
escape. Exit status 1 if anything escaped.

Usage: python bench/fuzz.py [--examples 2000] [--seed 0] [--parsers "NPZ,IDX"]
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time
import traceback
import warnings
from pathlib import Path

os.environ.setdefault("EDGEKD_QUIET", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fuzz_inputs import PARSERS, Case, outcome  # noqa: E402 - the fuzzed inputs live beside the tests
from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402


def fuzz(name: str, examples: int, rng_seed: int) -> tuple[collections.Counter, dict, float]:
    """Run ``examples`` drawn cases through one parser; counts, first escape per kind, seconds."""
    strategy, parse = PARSERS[name]
    counts: collections.Counter = collections.Counter()
    escapes: dict[str, tuple[Case, str]] = {}

    @seed(rng_seed)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],  # count, do not shrink
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def run(case: Case) -> None:
        counts["examples"] += 1
        try:
            counts["parsed" if outcome(parse, case) is None else "refused"] += 1
        except Exception as e:  # noqa: BLE001 - an escape is what is being counted
            counts["escapes"] += 1
            kind = f"{type(e).__name__} in {traceback.extract_tb(e.__traceback__)[-1].name}"
            lines = traceback.format_exc(limit=-3).splitlines()
            escapes.setdefault(kind, (case, "\n".join(line[:300] for line in lines)))

    start = time.perf_counter()
    run()
    return counts, escapes, time.perf_counter() - start


def main() -> int:
    warnings.filterwarnings("ignore", "Palette images with Transparency", UserWarning)  # PIL's
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000, help="examples per parser")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parsers", default=",".join(PARSERS), help="comma-separated")
    args = parser.parse_args()
    names = [n.strip() for n in args.parsers.split(",") if n.strip()]
    unknown = [n for n in names if n not in PARSERS]
    if unknown:
        parser.error(f"unknown parser(s) {', '.join(unknown)}; known: {', '.join(PARSERS)}")
    rows, found = [], {}
    for name in names:
        counts, escapes, seconds = fuzz(name, args.examples, args.seed)
        rows.append((name, counts, seconds))
        found |= {f"{name}: {kind}": example for kind, example in escapes.items()}
        print(f"{name}: {dict(counts)} in {seconds:.0f} s", file=sys.stderr, flush=True)
    print("| parser | examples | parsed | refused (one line, exit 2) | escaped | seconds |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, c, seconds in rows:
        print(
            f"| {name} | {c['examples']} | {c['parsed']} | {c['refused']} | {c['escapes']} "
            f"| {seconds:.0f} |"
        )
    for kind, (case, trace) in found.items():
        shown = {k: v[:200] for k, v in case.files.items()}
        print(f"\nESCAPE {kind}\n  files {shown}\n  arg {case.arg[:200]!r} {case.kwargs}\n{trace}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
