"""`eyas` command line: one sub-command per job, each implemented in its own module. The conventions every
sub-command shares (one error line, exit statuses, both flag spellings) live in `eyas.cli_args`; this module only
dispatches, and nothing imports it."""
from __future__ import annotations

import importlib
import sys

from eyas.cli_args import run_command

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


def usage() -> str:
    return "\n".join(["usage: eyas {" + ",".join(COMMANDS) + "} ... [--debug]", ""]
                     + [f"  {name:<8} {text}" for name, (_, text) in COMMANDS.items()])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if a != "--debug"), None)
    if command not in COMMANDS:
        print(usage())
        if command not in (None, "-h", "--help"):
            print(f"\neyas: unknown command {command!r}", file=sys.stderr)
            return 2
        return 0
    argv.remove(command)
    module = importlib.import_module(COMMANDS[command][0])
    name = module.command_name(argv) if hasattr(module, "command_name") else command  # `teacher train`
    return run_command(name, module.main, argv)


if __name__ == "__main__":
    sys.exit(main())
