"""What every `eyas` sub-command shares on its command line: the parser, the checked value types (counts, rates,
devices, output paths), and `run_command`, which turns a user error into one line and an exit status.

Conventions: bad input gets one line ``eyas <command>: error: ...`` on stderr and exit status 2 (``--debug``
anywhere on the line shows the traceback instead), an interrupt one line and 130; every value is checked before
any work starts or any file is written; every flag is accepted as ``--flag_name`` and ``--flag-name`` (help shows
the snake_case spelling every sub-command declares). Imports only `eyas.errors`: sub-command modules use it, and
nothing imports the dispatcher (`eyas.cli`).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

from eyas.errors import EyasError, Interrupted, UsageError

DEVICE_HELP = "torch device: auto (cuda when available, else cpu), cpu, cuda, cuda:N"


class ArgumentParser(argparse.ArgumentParser):
    """argparse with eyas' conventions: errors in one line; ``--a-b`` and ``--a_b`` both name the flag ``--a_b``
    (or ``--a-b``, whichever was declared), in sub-command parsers too."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        return super().parse_known_args(canonical_flags(self, args), namespace)


def option_strings(parser: argparse.ArgumentParser) -> set[str]:
    """Every ``--flag`` of ``parser`` and of its sub-command parsers."""
    found = set()
    for action in parser._actions:
        found.update(s for s in action.option_strings if s.startswith("--"))
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= option_strings(sub)
    return found


def canonical_flags(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """``argv`` with every ``--flag`` respelt as the parser declared it (``-`` and ``_`` interchangeable)."""
    declared = {s.replace("-", "_"): s for s in option_strings(parser)}
    out = []
    for token in argv:
        name, eq, value = token.partition("=")
        if token.startswith("--") and len(name) > 2:
            name = declared.get(name.replace("-", "_"), name)
        out.append(name + eq + value if token.startswith("--") else token)
    return out


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """``--device``, ``--num_threads`` and ``--seed``: the same names, defaults and checks in every sub-command that
    runs torch (`eyas distill` declares them in `DistillConfig`, with the same defaults)."""
    parser.add_argument("--device", type=device_name, default="auto", help=f"{DEVICE_HELP} (default: auto)")
    parser.add_argument("--num_threads", type=at_least(1), default=None,
                        help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0, help="seed of everything random (default: 0)")


# ------------------------------------------------------------------------------------ checked value types
def at_least(low: int) -> Callable[[str], int]:
    """argparse type: an integer >= ``low``."""
    return between(low, None)


def between(low: int, high: int | None) -> Callable[[str], int]:
    """argparse type: an integer in [``low``, ``high``] (no upper bound for None)."""
    bound = f">= {low}" if high is None else f"from {low} to {high}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer {bound}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be an integer {bound}, got {value}")
        return value
    parse.__name__ = f"integer {bound}"
    return parse


def finite_float(low: float = -math.inf, *, above: bool = False) -> Callable[[str], float]:
    """argparse type: a finite number >= ``low`` (> ``low`` with ``above``)."""
    bound = f"> {low:g}" if above else (f">= {low:g}" if low > -math.inf else "finite")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number {bound}, got {text!r}") from None
        if not math.isfinite(value) or value < low or (above and value == low):
            raise argparse.ArgumentTypeError(f"must be a number {bound}, got {text}")
        return value
    parse.__name__ = f"number {bound}"
    return parse


def device_name(text: str) -> str:
    """argparse type: a device this machine has (``auto``, ``cpu``, ``cuda``, ``cuda:N``); the name is kept."""
    try:
        resolve_device(text)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def resolve_device(name: str):
    """The torch device ``name`` means here: ``auto`` is cuda when available, else cpu; a device this machine
    lacks (CUDA without a GPU, cuda:3 with one GPU) or a name torch does not know is a `UsageError`."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise UsageError(f"--device {name!r}: not a device name ({DEVICE_HELP})") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UsageError(f"--device {name}: CUDA is not available on this machine / in this PyTorch build")
        if device.index is not None and device.index >= count:
            raise UsageError(f"--device {name}: this machine has {count} CUDA device(s)")
    elif device.type != "cpu":
        raise UsageError(f"--device {name}: eyas runs on cpu or cuda ({DEVICE_HELP})")
    return device


# ------------------------------------------------------------------------------------ outputs, checked first
def check_output_file(path: str | os.PathLike, flag: str) -> Path:
    """Refuse, before any work, an output file that cannot be written: a directory, or a place whose directory
    is not one or cannot be created or written."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{flag} {path}: is a directory (expected a file name)")
    _check_creatable_dir(path.parent, flag, path)
    return path


def check_output_dir(path: str | os.PathLike, flag: str) -> Path:
    """Refuse, before any work, an output directory that cannot be created or written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path}: exists and is not a directory")
    _check_creatable_dir(path, flag, path)
    return path


def check_report_outputs(args: argparse.Namespace) -> None:
    """The ``--json`` file and ``--plot`` directory of a command that has them (None: not asked), checked first."""
    if getattr(args, "json", None):
        check_output_file(args.json, "--json")
    if getattr(args, "plot", None):
        check_output_dir(args.plot, "--plot")


def _check_creatable_dir(directory: Path, flag: str, shown: Path) -> None:
    existing = directory.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{flag} {shown}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {shown}: {existing} is not writable")


# ------------------------------------------------------------------------------------ errors, printed once
def run_command(command: str, main: Callable[[list[str]], int | None], argv: Sequence[str]) -> int:
    """``main(argv)`` with eyas' conventions: an `EyasError` or `OSError` (an unreadable file, a full disk) becomes
    one line on stderr and its exit status, an interrupt one line and 130; ``--debug`` anywhere in ``argv`` lets
    the traceback through instead. The one place where user errors are printed."""
    argv = list(argv)
    debug = "--debug" in argv
    try:
        return int(main([a for a in argv if a != "--debug"]) or 0)
    except BaseException as e:  # noqa: BLE001 - everything that is not a user error is raised again
        error = user_error(e)
        if debug or error is None:
            raise
        if not error.reported_elsewhere:
            print(error.line(command), file=sys.stderr)
        return error.exit_status


def user_error(e: BaseException) -> EyasError | None:
    """``e`` as the `EyasError` to report, or None for a bug (a traceback). An interrupt counts also when a library
    wrapped it (torch.compile raises its own error from a KeyboardInterrupt)."""
    if isinstance(e, EyasError):
        return e
    if isinstance(e, OSError):
        return EyasError(str(e) or type(e).__name__)
    seen: set[int] = set()
    cause: BaseException | None = e
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return Interrupted()
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None
