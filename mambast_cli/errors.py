"""Every error mambast raises on purpose. Only cli.py turns them into exit codes."""
from __future__ import annotations


class MambastError(Exception):
    """Base class: a user-facing problem with a one-line message and an optional hint."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class UsageError(MambastError):
    """Bad option values or combinations (exit 2)."""

    exit_code = 2


class WeightsError(MambastError):
    """Missing, corrupt, unsafe or mismatched weights (exit 3)."""

    exit_code = 3


class DeviceError(MambastError):
    """No such device, or out of memory even at the smallest batch (exit 3)."""

    exit_code = 3


class OutputError(MambastError):
    """The output location cannot be written (exit 3)."""

    exit_code = 3


class OutputPathError(MambastError):
    """One output's own path is blocked (a file where its sub-folder goes, a folder at its name): only that item
    fails, the run goes on (exit 1 at the end). Not an OutputError, which stops the run."""

    exit_code = 1


class InputError(MambastError):
    """An input file is unreadable or unsupported: recorded per item, the run goes on (exit 1 at the end)."""

    exit_code = 1
