"""`eyas` command line: one sub-command per job, each implemented in its own module."""
from __future__ import annotations

import importlib
import sys

# sub-command -> module whose `main(argv)` runs it (imported lazily so `eyas --help` stays fast)
COMMANDS = {
    "parity": ("eyas.parity", "compare the PyTorch policy with the rl-tools C++ original on a checkpoint"),
    "export": ("eyas.export", "write a student as policy.h5, policy.h, policy.tar, policy.onnx and policy.pt for deployment"),
    "distill": ("eyas.distill.cli", "distill teachers into a GRU student (rl-tools post-training semantics)"),
    "teacher": ("eyas.teachers.cli", "train and evaluate PPO teachers (rsl_rl) on the embedded env"),
    "fly": ("eyas.envs.fly", "fly a policy checkpoint in the embedded quadrotor env and report/plot"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: eyas {" + ",".join(COMMANDS) + "} ...\n")
        for name, (_, text) in COMMANDS.items():
            print(f"  {name:<8} {text}")
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\neyas: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
