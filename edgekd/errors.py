"""Errors that map to the CLI's exit codes (0 ok, 1 runtime failure, 2 bad input, 3 gate failed)."""

from __future__ import annotations


class EdgekdError(Exception):
    """A failure with a one-line message meant for the user."""

    exit_code = 1


class BadInput(EdgekdError):
    """The user gave something edgekd cannot use (file, option, data, target)."""

    exit_code = 2


class GateFailed(EdgekdError):
    """A validation gate failed: accuracy drop, latency budget or INT8 not paying."""

    exit_code = 3
