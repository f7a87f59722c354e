"""Errors that the CLI turns into exit codes and one-line messages (conventions.md)."""

from __future__ import annotations

OOM_ADVICE = "try a smaller --batch-size, --dtype bfloat16 or --device-map auto"
"""What an out-of-memory failure tells the user to try."""


class SurgeonError(Exception):
    """Base class: a failure surgeon can explain in one line."""

    exit_code: int = 3


class InputError(SurgeonError):
    """Bad usage or bad input (missing path, not a model, unreadable file): exit 2."""

    exit_code = 2


class RuntimeFailure(SurgeonError):  # noqa: N818 - named for the exit code it maps to
    """A run that failed while working (out of memory, NaN): exit 3."""

    exit_code = 3
