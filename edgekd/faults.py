"""Fault injection for crash-consistency tests: ``EDGEKD_KILL_AT=<stage>:<point>[:<n>]`` signals
this process's group the n-th time (default: the first) the run reaches that point.

The signal is SIGKILL (``kill -9``: no cleanup runs), or SIGINT (Ctrl-C) with
``EDGEKD_KILL_SIGNAL=INT``. The points:

- ``distill:batch``, ``qat:batch``: after a training step (mid-epoch);
- ``distill:epoch``, ``qat:epoch``: after an epoch's checkpoint is written;
- ``cache:batch``: after a batch of teacher outputs is written into an unfinished cache entry;
- ``validate:measured``: after the models are measured, before the reports are written;
- ``write:<file name>``: inside an atomic write of that file, its temporary copy complete,
  before the rename (e.g. ``write:student_int8.onnx``, during export).
"""

from __future__ import annotations

import os
import signal
import sys
from collections import Counter
from functools import cache

from edgekd.errors import BadInput

KILL_AT = "EDGEKD_KILL_AT"
KILL_SIGNAL = "EDGEKD_KILL_SIGNAL"
SIGNALS = {"KILL": signal.SIGKILL, "INT": signal.SIGINT}

_reached: Counter[str] = Counter()


@cache
def _parse(spec: str) -> tuple[str, int]:
    """(``stage:point``, n) of an ``EDGEKD_KILL_AT`` value."""
    where, _, n = spec.rpartition(":")
    if not n.isdigit():
        where, n = spec, "1"
    if where.count(":") != 1 or int(n) < 1:
        raise BadInput(f"{KILL_AT}={spec!r}: expected STAGE:POINT[:N], N at least 1")
    return where, int(n)


def point(stage: str, name: str) -> None:
    """Mark a point of the run; signal the process group here if ``EDGEKD_KILL_AT`` names it."""
    spec = os.environ.get(KILL_AT)
    if not spec:
        return
    where, n = _parse(spec)
    here = f"{stage}:{name}"
    if here != where:
        return
    _reached[here] += 1
    if _reached[here] != n:
        return
    sig = os.environ.get(KILL_SIGNAL, "KILL").upper()
    if sig not in SIGNALS:
        raise BadInput(f"{KILL_SIGNAL}={sig!r}: valid: {', '.join(SIGNALS)}")
    print(f"edgekd: fault injection: SIG{sig} at {here}:{n}", file=sys.stderr, flush=True)
    os.killpg(os.getpgrp(), SIGNALS[sig])
