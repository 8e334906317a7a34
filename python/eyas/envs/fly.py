"""`eyas fly CHECKPOINT.h5 [--model NAME | --randomized] [--episodes N] [--plot DIR]`: fly an rl-tools
policy checkpoint (e.g. RAPTOR's) in the embedded point-control env and report how it flew."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from eyas.cli_args import (ArgumentParser, add_run_flags, at_least, check_report_outputs, resolve_device,
                           run_command)
from eyas.errors import UsageError
from eyas.io import atomic_write_json
from eyas.rltools_h5 import RAPTOR_OBSERVATION
from eyas.envs.rollout import EpisodeStats, evaluate, student_policy_fn, wilson_interval
from eyas.envs.point_control import PointControlEnv, PointControlEnvCfg
from eyas.sim import MODEL_NAMES


def load_policy(checkpoint: str | Path, device: str = "cpu") -> torch.nn.Module:
    """An rl-tools HDF5 actor checkpoint as an `eyas.StudentPolicy` in evaluation mode."""
    from eyas import load_rltools_h5

    policy = load_rltools_h5(str(checkpoint))
    return policy.to(device).eval()


def default_checkpoint() -> Path:
    """RAPTOR's released checkpoint from the `foundation-policy` package."""
    from eyas.rltools_h5 import raptor_checkpoint_path

    return raptor_checkpoint_path()


def fly(policy: torch.nn.Module, dynamics: str, episodes: int, seed: int = 0, device: str = "cpu",
        max_parallel: int = 1000, record: int = 0) -> EpisodeStats:
    """Evaluate `policy` on `episodes` episodes of `dynamics` ("randomized" or a registry model)."""
    cfg = PointControlEnvCfg(num_envs=min(episodes, max_parallel), device=device, seed=seed, dynamics=dynamics)
    env = PointControlEnv(cfg)
    if getattr(policy, "num_obs", env.num_obs) != env.num_obs:
        raise UsageError(f"the policy reads {policy.num_obs} observations; the env's policy observation is "
                         f"{env.num_obs} wide (l2f's: {RAPTOR_OBSERVATION})")
    return evaluate(student_policy_fn(policy), env, episodes, record_envs=record)


def format_row(name: str, result: EpisodeStats) -> str:
    low, high = wilson_interval(result.share_terminated, result.episodes)
    return (f"{name:<12} {result.episodes:>8} {100 * result.share_terminated:>11.1f} %"
            f"  [{100 * low:4.1f}, {100 * high:4.1f}]  {100 * result.position_error_mean:>10.2f} cm"
            f"  {result.return_mean:>9.1f}  {result.episode_length_mean:>7.1f}")


HEADER = (f"{'dynamics':<12} {'episodes':>8} {'terminated':>13}  {'95% CI':>12}  {'pos. error':>13}"
          f"  {'return':>9}  {'length':>7}")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="eyas fly", description=__doc__)
    parser.add_argument("checkpoint", nargs="?", help="rl-tools .h5 checkpoint (default: RAPTOR's, foundation-policy)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--model", choices=MODEL_NAMES, help="fly one registry model")
    group.add_argument("--randomized", action="store_true", help="RAPTOR's domain-randomised dynamics (default)")
    parser.add_argument("--episodes", type=at_least(1), default=100)
    add_run_flags(parser)
    parser.add_argument("--plot", type=Path, help="directory for flight plots of the first episodes")
    parser.add_argument("--num_plots", type=at_least(0), default=4)
    parser.add_argument("--json", type=Path, help="write the summary as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_report_outputs(args)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    device = str(resolve_device(args.device))
    checkpoint = Path(args.checkpoint) if args.checkpoint else default_checkpoint()
    policy = load_policy(checkpoint, device)
    dynamics = args.model or "randomized"
    start = time.time()
    result = fly(policy, dynamics, args.episodes, args.seed, device, record=args.num_plots if args.plot else 0)
    print(HEADER)
    print(format_row(dynamics, result))
    print(f"({time.time() - start:.1f} s; position error: mean |p| over the last {result.tail_steps} steps of "
          "episodes that were not terminated)")
    if args.plot:
        from eyas.envs.plots import plot_flight

        for i, trajectory in enumerate(result.trajectories):
            path = plot_flight(trajectory, args.plot / f"{dynamics}_{i}.png", title=f"{checkpoint.name}: {dynamics}, episode {i}")
            print(f"wrote {path}")
    if args.json:
        atomic_write_json(args.json, {"checkpoint": str(checkpoint), "dynamics": dynamics, **result.summary()}, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_command("fly", main, sys.argv[1:]))
