"""The device side's errors, each with its exit status for the host."""

from __future__ import annotations


class Unusable(Exception):
    """The model, the input or a build setting cannot be used (exit 2)."""

    exit_code = 2


class Missing(Exception):
    """A module, library or execution provider this run needs is not here (exit 3)."""

    exit_code = 3


class BuildFailed(Unusable):
    """TensorRT could not parse or build the model; ``log`` holds what the builder said."""

    def __init__(self, message: str, log: str) -> None:
        super().__init__(message)
        self.log = log


def first_line(e: BaseException) -> str:
    """The first non-empty line of an exception's text, or its type's name."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__
