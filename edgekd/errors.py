"""Errors that map to the CLI's exit codes (0 ok, 1 runtime failure, 2 bad input, 3 gate failed,
4-8 a remote device out of reach: see the classes at the end)."""

from __future__ import annotations

import json
import math
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


def printable(text: object, limit: int = 200) -> str:
    """``text`` (a path, a key) for a one-line message: as it is if it prints on one line, else
    JSON-quoted (newlines, NULs escaped); cut in the middle past ``limit`` characters."""
    text = str(text)
    text = text if text.isprintable() else json.dumps(text)
    return text if len(text) <= limit else f"{text[: limit // 2 - 2]}...{text[-(limit // 2 - 1) :]}"


def shown(value: object, limit: int = 80, depth: int = 2) -> str:
    """``value`` for a one-line message, as TOML writes it (strings quoted, ``true``, ``nan``),
    arrays and tables ``depth`` levels deep, anything else by its repr; cut past ``limit``."""
    text = _as_toml(value, depth)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _as_toml(value: object, depth: int) -> str:
    if isinstance(value, list | tuple | dict) and depth == 0:
        return "{...}" if isinstance(value, dict) else "[...]"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_as_toml(v, depth - 1) for v in value) + "]"
    if isinstance(value, dict):
        pairs = (f"{_as_toml(str(k), 0)} = {_as_toml(v, depth - 1)}" for k, v in value.items())
        return "{" + ", ".join(pairs) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, str):  # JSON's escapes are TOML's, but TOML escapes DEL too
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    return repr(value)


# Remote devices (``--remote USER@HOST``): one exit code per way the device can be out of reach.


class RemoteUnreachable(EdgekdError):
    """No SSH connection: refused, unresolvable or unreachable host, connection dropped."""

    exit_code = 4


class RemoteAuthFailed(EdgekdError):
    """The SSH server refused the login (user, key or authorized_keys)."""

    exit_code = 5


class RemoteHostKey(EdgekdError):
    """The device's host key is unknown, or does not match the known or pinned one."""

    exit_code = 6


class RemoteNotReady(EdgekdError):
    """The device lacks what the runner needs: python, numpy, onnxruntime or tensorrt."""

    exit_code = 7


class RemoteTimeout(EdgekdError):
    """Connecting, or a step on the device, took longer than allowed."""

    exit_code = 8
