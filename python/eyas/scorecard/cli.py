"""`eyas evaluate [POLICY ...]`: RAPTOR's evaluation protocol (`eyas.scorecard.cases`) for students, RAPTOR's
released policy as the reference row, every policy on the same episodes.

POLICY: an rl-tools .h5 actor or an `eyas distill` .pt checkpoint (best_actor.pt), optionally named ``NAME=PATH``.
Exit status: 0 done, 2 bad input (one line on stderr, nothing written), 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from eyas.cli_args import (ArgumentParser, add_run_flags, at_least, check_report_outputs,
                           resolve_device, run_command)
from eyas.io import atomic_write, read_torch_file

from .cases import CASE_NAMES, default_cases
from .report import REFERENCE, plot_summary, plot_tracking, table_lines
from .run import Scorecard, ScorecardError, dynamics_file


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="eyas evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("policies", nargs="*", metavar="POLICY", help="student .h5 / .pt files (NAME=PATH to name one)")
    p.add_argument("--cases", nargs="+", default=list(CASE_NAMES), choices=CASE_NAMES, metavar="CASE",
                   help=f"cases to fly (default: all): {', '.join(CASE_NAMES)}")
    p.add_argument("--episodes", type=at_least(1), default=256, help="episodes per group of a case (default: 256)")
    p.add_argument("--dynamics", nargs="+", default=[], metavar="FILE",
                   help="l2f JSON dynamics files flown in the holdout case beside the hold-out platforms")
    p.add_argument("--no_reference", action="store_true", help="leave RAPTOR's released policy out")
    p.add_argument("--json", type=Path, help="write the scorecard (every figure, per-episode results) as JSON")
    p.add_argument("--plot", type=Path, metavar="DIR", help="write scorecard.png and tracking flights here")
    add_run_flags(p)  # --seed: of every case's episodes
    return p


def load_policy(path: str) -> torch.nn.Module:
    """A student from an rl-tools .h5 actor or an `eyas distill` .pt checkpoint (read without unpickling code)."""
    from eyas.model import StudentPolicy
    from eyas.rltools_h5 import RLToolsH5Error, load_rltools_h5

    file = Path(path)
    if not file.is_file():
        raise ScorecardError(f"{path}: no such file")
    try:
        if file.suffix in (".h5", ".hdf5"):
            return load_rltools_h5(file)
        saved = read_torch_file(file, ScorecardError, "student policy")
        student = StudentPolicy(int(saved["num_obs"]), int(saved["num_actions"]), int(saved["hidden_dim"]))
        student.load_state_dict(saved["state_dict"])
    except (RLToolsH5Error, RuntimeError, KeyError, TypeError, ValueError) as e:
        raise ScorecardError(f"{path}: not a student policy (.h5 rl-tools actor or eyas .pt checkpoint): "
                             f"{type(e).__name__}") from e
    if not all(bool(torch.isfinite(v).all()) for v in student.state_dict().values()):
        raise ScorecardError(f"{path}: the policy's parameters contain NaN or inf")
    return student


def policies_of(args) -> dict[str, torch.nn.Module]:
    from eyas.rltools_h5 import raptor_checkpoint_path

    out = {} if args.no_reference else {REFERENCE: load_policy(str(raptor_checkpoint_path()))}
    for given in args.policies:
        name, _, path = given.rpartition("=") if "=" in given else ("", "", given)
        name = name or Path(path).stem
        if name in out:
            name = f"{name}_{len(out)}"
        out[name] = load_policy(path)
    if not out:
        raise ScorecardError("no policy to fly: give POLICY files or leave out --no_reference")
    for name, policy in out.items():
        if (policy.num_obs, policy.num_actions) != (22, 4):
            raise ScorecardError(f"{name}: the scorecard flies RAPTOR's 22 observations and 4 actions, the policy "
                                 f"has {policy.num_obs} and {policy.num_actions}")
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_report_outputs(args)
    for path in args.dynamics:
        dynamics_file(path)
    device, policies = resolve_device(args.device), policies_of(args)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    cases = {name: case for name, case in default_cases(tuple(args.dynamics)).items() if name in args.cases}
    card = Scorecard(cases, episodes=args.episodes, seed=args.seed, device=device)
    start = time.perf_counter()
    result = card.run(policies, record=3 if args.plot else 0,
                      progress=lambda label: print(f"  {label} ({time.perf_counter() - start:.0f} s)",
                                                   file=sys.stderr, flush=True))
    print("\n".join(table_lines(result)))
    print(f"({len(policies)} policies x {sum(len(c.groups) for c in cases.values())} groups x {args.episodes} "
          f"episodes in {result['seconds']:.0f} s)")
    if args.json:
        atomic_write(args.json, json.dumps({k: v for k, v in result.items() if k != "flights"}, indent=1))
    if args.plot:
        for path in [plot_summary(result, args.plot / "scorecard.png"), *plot_tracking(result, args.plot)]:
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_command("evaluate", main, sys.argv[1:]))
