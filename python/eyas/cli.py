"""`eyas` command line: one sub-command per job, each implemented in its own module, and the conventions every
sub-command shares: bad input gets one line ``eyas <command>: error: ...`` on stderr and exit status 2 (``--debug``
anywhere on the line shows the traceback instead), and every flag is accepted as ``--flag_name`` and
``--flag-name`` (help shows the spelling it was declared with)."""
from __future__ import annotations

import argparse
import importlib
import sys

# sub-command -> module whose `main(argv)` runs it (imported lazily so `eyas --help` stays fast)
COMMANDS = {
    "parity": ("eyas.parity", "compare the PyTorch policy with the rl-tools C++ original on a checkpoint"),
    "export": ("eyas.export", "write a student as policy.h5, policy.h, policy.tar, policy.onnx and policy.pt for deployment"),
    "distill": ("eyas.distill.cli", "distill teachers into a GRU student (rl-tools post-training semantics)"),
    "teacher": ("eyas.teachers.cli", "train and evaluate PPO teachers (rsl_rl) on the embedded env"),
    "fly": ("eyas.envs.fly", "fly a policy checkpoint in the embedded quadrotor env and report/plot"),
    "evaluate": ("eyas.scorecard.cli", "RAPTOR's evaluation protocol (hover, tracking, latency, wind, weak motor, "
                 "noise, unseen platforms) for students beside RAPTOR"),
}


class ArgumentParser(argparse.ArgumentParser):
    """argparse with eyas' conventions: errors in one line; ``--a-b`` and ``--a_b`` both name the flag ``--a_b``
    (or ``--a-b``, whichever was declared), in sub-command parsers too."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        return super().parse_known_args(canonical_flags(self, args), namespace)


def _option_strings(parser: argparse.ArgumentParser) -> set[str]:
    found = set()
    for action in parser._actions:
        found.update(s for s in action.option_strings if s.startswith("--"))
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= _option_strings(sub)
    return found


def canonical_flags(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """``argv`` with every ``--flag`` respelt as the parser declared it (``-`` and ``_`` interchangeable)."""
    declared = {s.replace("-", "_"): s for s in _option_strings(parser)}
    out = []
    for token in argv:
        name, eq, value = token.partition("=")
        if token.startswith("--") and len(name) > 2:
            name = declared.get(name.replace("-", "_"), name)
        out.append(name + eq + value if token.startswith("--") else token)
    return out


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean bad input (a file, a setting), reported in one line."""
    from eyas.distill.dataset import DistillationError
    from eyas.envs.isaaclab_task import IsaacLabError
    from eyas.rltools_h5 import RLToolsH5Error
    from eyas.teachers.base import TeacherError

    return RLToolsH5Error, TeacherError, DistillationError, IsaacLabError, OSError


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: eyas {" + ",".join(COMMANDS) + "} ... [--debug]\n")
        for name, (_, text) in COMMANDS.items():
            print(f"  {name:<8} {text}")
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\neyas: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    module = importlib.import_module(COMMANDS[argv[0]][0])
    try:
        return int(module.main(argv[1:]) or 0)
    except user_errors() as e:
        if debug:
            raise
        print(f"eyas {argv[0]}: error: {(str(e).strip().splitlines() or [type(e).__name__])[0]}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
