"""Every error mambast raises on purpose, and the exit code of an interrupted run. Only the CLI modules turn them
into exit codes."""
from __future__ import annotations

import signal
from types import FrameType

_interrupt_exit = 130   # Ctrl-C; 128 + the signal's number once `stop_on_sigterm`'s handler has run


def interrupt_exit_code() -> int:
    """The exit code of a run stopped by KeyboardInterrupt: 130 after Ctrl-C, 143 after a SIGTERM."""
    return _interrupt_exit


def stop_on_sigterm() -> None:
    """Make SIGTERM (`kill`, a job scheduler's or CI's timeout, a container stop) stop a run the way Ctrl-C does:
    outputs in flight are discarded, finished ones stay, the summary is printed, and the exit code is 143 (without
    this, Python dies at once: no summary, and temporary files wait for the next run to be cleaned). Call it from
    the main thread."""
    def _handler(signum: int, frame: FrameType | None) -> None:
        global _interrupt_exit
        _interrupt_exit = 128 + signum
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _handler)


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
