"""Progress bars on stderr (quiet when stderr is not a terminal, or when asked)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm import tqdm


@contextmanager
def progress(total: int | None, desc: str, unit: str = "it") -> Iterator[tqdm]:
    """A tqdm bar on stderr; disabled when ``EDGEKD_QUIET`` is set or stderr is not a TTY."""
    disable = bool(os.environ.get("EDGEKD_QUIET")) or not sys.stderr.isatty()
    with tqdm(
        total=total, desc=desc, unit=unit, file=sys.stderr, disable=disable, leave=False
    ) as bar:
        yield bar


def log(message: str) -> None:
    """One line of progress on stderr (stdout is kept for ``--json``)."""
    if not os.environ.get("EDGEKD_QUIET"):
        print(message, file=sys.stderr, flush=True)
