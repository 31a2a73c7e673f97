"""A user's TOML file (target profile, run config) read with bounds, so that no input can
exhaust memory or the stack: every failure is one of three exception types for the caller to
word."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

MAX_BYTES = 1 << 20  # hand-written TOML is kilobytes; more is not one (--target /dev/zero)


def read_toml(path: Path) -> dict[str, Any]:
    """Parse the TOML file ``path``.

    Raises OSError when it cannot be read or is over :data:`MAX_BYTES`, ValueError when it is
    not UTF-8 or the path is one the OS cannot take (a NUL, a lone surrogate), and
    ``tomllib.TOMLDecodeError`` (a ValueError too: catch it first) when it is not valid TOML,
    including arrays or tables nested too deeply to parse and integers too long to convert.
    """
    with path.open("rb") as f:
        data = f.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise OSError(f"larger than {MAX_BYTES >> 20} MiB: not a TOML file")
    text = data.decode("utf-8")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        raise
    except RecursionError:
        raise tomllib.TOMLDecodeError("arrays or tables nested too deeply") from None
    except ValueError as e:  # tomllib's int() of a number over Python's 4300-digit limit
        raise tomllib.TOMLDecodeError(str(e)) from None
