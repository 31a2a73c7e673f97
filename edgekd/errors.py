"""Errors that map to the CLI's exit codes (0 ok, 1 runtime failure, 2 bad input, 3 gate failed)."""

from __future__ import annotations

import re


class EdgekdError(Exception):
    """A failure with a one-line message meant for the user."""

    exit_code = 1


class BadInput(EdgekdError):
    """The user gave something edgekd cannot use (file, option, data, target)."""

    exit_code = 2


class GateFailed(EdgekdError):
    """A validation gate failed: accuracy drop, latency budget or INT8 not paying."""

    exit_code = 3


def first_line(e: BaseException, containing: str = "") -> str:
    """The first non-empty line of an exception's text (with ``containing``), escapes removed.

    Without ``containing`` it falls back to the exception's type name; with it, to "".
    """
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    lines = [line.strip() for line in text.splitlines() if line.strip() and containing in line]
    return lines[0] if lines else ("" if containing else type(e).__name__)
