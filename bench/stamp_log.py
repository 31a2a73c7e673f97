#!/usr/bin/env python3
"""Where a run's time goes: stamp each log line with the seconds since the start, or sum a
stamped log per stage (the spans between edgekd's ``== STAGE`` lines; before the first: plan).

Usage: edgekd compress ... 2> >(python3 bench/stamp_log.py > run.log)
       python3 bench/stamp_log.py --stages run.log
"""

from __future__ import annotations

import re
import sys
import time


def stamp() -> None:
    t0 = time.perf_counter()
    for line in sys.stdin:
        print(f"{time.perf_counter() - t0:7.1f}s {line}", end="", flush=True)


def stages(path: str) -> None:
    matches = (re.match(r" *([\d.]+)s (.*)", line) for line in open(path))
    stamps = [(float(m[1]), m[2]) for m in matches if m]
    starts = [(0.0, "plan")] + [(t, text[3:]) for t, text in stamps if text.startswith("== ")]
    ends = [t for t, _ in starts[1:]] + [stamps[-1][0]]
    for (begin, name), end in zip(starts, ends, strict=True):
        print(f"{name:>10}: {end - begin:6.1f} s")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--stages"]:
        stages(sys.argv[2])
    else:
        stamp()
