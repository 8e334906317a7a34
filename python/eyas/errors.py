"""The errors eyas reports to its user as one line instead of a traceback.

Every module raises a subclass of `EyasError` for bad input (a file, a setting, a command-line value) or a request
it refuses; the command line prints it once, as ``eyas <command>: error: <message>``, and exits with the error's
``exit_status`` (`eyas.cli_args.run_command`). This module imports nothing from eyas, so every module may use it.
"""
from __future__ import annotations


class EyasError(Exception):
    """Bad input or a refused request, reported as one line naming the problem."""

    exit_status = 2
    # True where another process reports this error (a torchrun rank other than 0 repeating rank 0's)
    reported_elsewhere = False

    def line(self, command: str) -> str:
        first = (str(self).strip().splitlines() or [type(self).__name__])[0]
        return f"eyas {command}: error: {first}"


class UsageError(EyasError, ValueError):
    """A command-line value that cannot work: a number out of range, an unusable device, an unwritable output."""


class Interrupted(EyasError):
    """The user interrupted the run (Ctrl-C, SIGINT); the message says what can be continued."""

    exit_status = 130

    def line(self, command: str) -> str:
        return f"eyas {command}: {str(self) or 'interrupted'}"
