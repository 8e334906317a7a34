#!/usr/bin/env python
"""End-to-end check: fly the released RAPTOR checkpoint in eyas' embedded l2f environment.

Loads `foundation_policy/blob/checkpoint.h5` with `eyas.load_rltools_h5`, flies 100 episodes on each
registry model and 1,000 episodes of RAPTOR's domain-randomised dynamics (point control, 500 steps, RAPTOR's
initial states / termination), and prints the share of terminated episodes (with a 95 % Wilson interval) and
the mean position error over the last 100 steps of the episodes that were not terminated.
Target: <= 5 % terminated on the randomised set (RAPTOR's own evaluation in l2f: ~4 %).

With `--compare-l2f` (needs the `l2f` package) the same policy also flies the same parameter sets in l2f's
C++ vector environment (initial states drawn by l2f), as an independent reference for the figures.

    python benchmarks/raptor_flight.py [--checkpoint PATH] [--episodes-per-model 100] [--randomized 1000]
                                       [--plot DIR] [--json OUT] [--compare-l2f]
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from eyas.envs.rollout import EpisodeStats
from eyas.envs.fly import HEADER, default_checkpoint, fly, format_row, load_policy
from eyas.envs.point_control import PointControlEnv, PointControlEnvCfg
from eyas.sim import MODEL_NAMES, Params


@torch.no_grad()
def fly_in_l2f(policy: torch.nn.Module, params: Params, steps: int = 500, tail_steps: int = 100,
               seed: int = 0) -> EpisodeStats:
    """Fly `policy` once per parameter set in l2f's vector environment (float32 C++, initial states and
    termination by l2f). Position error from l2f's observation (target at the origin, no noise)."""
    import l2f

    n = params.batch_size
    size = next(k for k in sorted(l2f.vector_selector) if k >= n)
    vector = l2f.vector_selector[size]
    device, env, vp, rng = l2f.Device(), vector.VectorEnvironment(), vector.VectorParameters(), vector.VectorRng()
    vector.initialize_environment(device, env)
    vector.initialize_rng(device, rng, seed)
    vector.initial_parameters(device, env, vp)
    single_env = l2f.Environment()
    l2f.initialize_environment(device, single_env)
    sets = vp.parameters
    for i in range(size):
        l2f.parameters_from_json(device, single_env, params[i % n].to_l2f_json(), sets[i])
    vp.parameters = sets
    state, next_state = vector.VectorState(), vector.VectorState()
    vector.sample_initial_state(device, env, vp, state, rng)
    observation = np.zeros((size, env.OBSERVATION_DIM), dtype=np.float32)
    flags = np.zeros(size, dtype=bool)
    alive = np.ones(size, dtype=bool)
    length = np.full(size, steps)
    errors = np.zeros((size, steps))
    policy.reset(batch_size=size)
    for k in range(steps):
        vector.observe(device, env, vp, state, observation, rng)
        action = policy(torch.from_numpy(observation[:, :22].copy())).numpy().astype(np.float32)
        vector.step(device, env, vp, state, np.ascontiguousarray(action), next_state, rng)
        state.assign(next_state)
        vector.observe(device, env, vp, state, observation, rng)
        errors[:, k] = np.linalg.norm(observation[:, :3], axis=-1)
        vector.terminated(device, env, vp, state, flags, rng)
        ended = alive & flags
        length[ended] = k + 1
        alive &= ~flags
    tail = np.array([errors[i, max(0, length[i] - tail_steps):length[i]].mean() for i in range(size)])
    final = errors[np.arange(size), np.maximum(length, 1) - 1]
    return EpisodeStats(returns=torch.full((n,), math.nan, dtype=torch.float64),
                        lengths=torch.as_tensor(length[:n], dtype=torch.long),
                        terminated=torch.as_tensor(~alive[:n]), position_error=torch.as_tensor(tail[:n]),
                        final_position_error=torch.as_tensor(final[:n], dtype=torch.float64),
                        rms_error=torch.full((n,), math.nan, dtype=torch.float64),
                        settling_steps=torch.full((n,), math.nan, dtype=torch.float64), tail_steps=tail_steps)


def evaluation_params(dynamics: str, episodes: int, seed: int) -> Params:
    """The per-episode parameter sets (MDP defaults applied) the eyas env uses for `dynamics`."""
    env = PointControlEnv(PointControlEnvCfg(num_envs=episodes, dynamics=dynamics, seed=seed))
    return env.params.clone()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--episodes-per-model", type=int, default=100)
    parser.add_argument("--randomized", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--plot", type=Path, help="directory for flight plots (2 episodes per dynamics)")
    parser.add_argument("--json", type=Path, help="write all summaries as JSON")
    parser.add_argument("--compare-l2f", action="store_true", help="also fly the same parameter sets in l2f")
    args = parser.parse_args()

    checkpoint = args.checkpoint or default_checkpoint()
    policy = load_policy(checkpoint, args.device)
    print(f"checkpoint: {checkpoint}\ndevice: {args.device}\n")
    print(HEADER)
    summaries = {}
    runs = [(name, args.episodes_per_model) for name in MODEL_NAMES] + [("randomized", args.randomized)]
    start = time.time()
    for name, episodes in runs:
        result = fly(policy, name, episodes, seed=args.seed, device=args.device, record=2 if args.plot else 0)
        print(format_row(name, result), flush=True)
        summaries[name] = result.summary()
        if args.plot:
            from eyas.envs.plots import plot_flight

            for i, trajectory in enumerate(result.trajectories):
                plot_flight(trajectory, args.plot / f"raptor_{name}_{i}.png", title=f"RAPTOR, {name}, episode {i}")
    print(f"\n{time.time() - start:.0f} s. Position error: mean |p - target| over the last 100 of 500 steps of "
          "episodes that were not terminated.")
    if args.compare_l2f:
        print("\nsame policy and parameter sets in l2f 2.0.18 (C++, float32; initial states drawn by l2f; "
              "returns not computed):")
        print(HEADER)
        policy_cpu = policy.to("cpu")
        for name, episodes in runs:
            result = fly_in_l2f(policy_cpu, evaluation_params(name, episodes, args.seed), seed=args.seed)
            print(format_row(name, result), flush=True)
            summaries[f"l2f/{name}"] = result.summary()
    share = summaries["randomized"]["share_terminated"]
    print(f"randomised dynamics: {100 * share:.1f} % terminated (target <= 5 %; RAPTOR in l2f: ~4 %)")
    if args.json:
        args.json.write_text(json.dumps({"checkpoint": str(checkpoint), "results": summaries}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
