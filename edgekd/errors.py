"""Errors that map to the CLI's exit codes (0 ok, 1 runtime failure, 2 bad input, 3 gate failed,
4-8 a remote device out of reach: see the classes at the end)."""

from __future__ import annotations

import json
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
