"""Run a module as ``python -m`` does, and have it stop at an exact point of its own run, where a test then kills
or interrupts it: no race with a run that ends between a poll and a kill.

    python tests/stop_point.py FD TARGET=N [TARGET=N ...] -- MODULE ARGS...

TARGET is ``module:attribute.path`` (a function or a method, patched where the run looks it up). The stages count
in turn: once the first TARGET has returned N times, the second's calls are counted, and so on; when the last
reaches its N the run writes one byte to file descriptor FD (a pipe the test waits on) and sleeps until a signal
ends it (after 10 minutes it exits with status 3, so a test that failed first leaves no process behind). A run that
ends before that point closes FD without a byte. Used by tests/test_crash_resume.py.
"""
from __future__ import annotations

import functools
import importlib
import os
import runpy
import signal
import sys
import time


WAIT_S = 600


def _owner_and_name(target: str):
    module, _, path = target.partition(":")
    owner = importlib.import_module(module)
    *parents, name = path.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    return owner, name


def install(fd: int, stages: list[tuple[str, int]]) -> None:
    """Wrap every stage's target; the last stage's Nth return signals on ``fd`` and waits to be killed."""
    position = {"stage": 0, "calls": 0}

    def after_call(index: int) -> None:
        if index != position["stage"]:
            return
        position["calls"] += 1
        if position["calls"] < stages[index][1]:
            return
        position["stage"], position["calls"] = index + 1, 0
        if position["stage"] == len(stages):
            os.write(fd, b"!")
            time.sleep(WAIT_S)  # the test's SIGKILL or SIGINT ends the run here
            os._exit(3)

    for index, (target, _) in enumerate(stages):
        owner, name = _owner_and_name(target)
        original = getattr(owner, name)

        @functools.wraps(original)
        def wrapper(*args, __original=original, __index=index, **kwargs):
            result = __original(*args, **kwargs)
            after_call(__index)
            return result
        setattr(owner, name, wrapper)


def main(argv: list[str]) -> None:
    # Ctrl-C as an interactive run gets it, also when this was started with SIGINT ignored (a background job of a
    # non-interactive shell inherits SIG_IGN, and Python then installs no handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    split = argv.index("--")
    fd, specs = int(argv[0]), argv[1:split]
    module, *args = argv[split + 1:]
    install(fd, [(spec.rsplit("=", 1)[0], int(spec.rsplit("=", 1)[1])) for spec in specs])
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
