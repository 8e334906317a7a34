"""Where a `PointControlEnv.step` goes: the compiled env step, the next-start renewal, the rest.

Times `bench_env.py`'s workload (randomised dynamics, random actions: episodes end every ~30 steps, so resets weigh
far more than in training) with the env's own methods wrapped by timers, nothing re-implemented:

* transition   the compiled (or eager) `eyas.envs.step.env_step` call: dynamo's guards, the wrapper, the kernel
* renewal      `_renew_next` for the rows that finished: their next episode start copied in, with the reservoir
               refills it triggers (`StartSource.take`: one batched draw of max(4 B, 16,384) randomised starts)
* rest         everything else in `step`: action staging, the host read, the finished rows' parameters and
               dynamics features copied in, the observation dict

    python benchmarks/env_step_breakdown.py [--sizes 64 1024 4096] [--steps 2000] [--eager]
"""
from __future__ import annotations

import argparse
import time
from collections import Counter

import torch

from eyas.envs import PointControlEnv, PointControlEnvCfg


def timed(counter: Counter, name: str, fn):
    def call(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            counter[name] += time.perf_counter() - start
    return call


def breakdown(num_envs: int, steps: int, compiled: bool) -> dict:
    env = PointControlEnv(PointControlEnvCfg(num_envs=num_envs, dynamics="randomized", compile=compiled))
    actions = torch.rand(64, num_envs, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    for k in range(100):  # first compile, a reservoir refill
        env.step(actions[k % 64])
    spent = Counter()
    env._step = timed(spent, "transition", env._step)
    env._renew_next = timed(spent, "renewal", env._renew_next)
    env._starts.take = timed(spent, "of which reservoir", env._starts.take)
    finished = 0
    start = time.perf_counter()
    for k in range(steps):
        finished += int(env.step(actions[k % 64])[2].sum())
    total = time.perf_counter() - start
    us = {name: 1e6 * t / steps for name, t in spent.items()}
    us["rest"] = 1e6 * total / steps - us["transition"] - us["renewal"]
    return {"num_envs": num_envs, "step_us": 1e6 * total / steps, "finished_per_step": finished / steps} | us


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 1024, 4096])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--eager", action="store_true", help="the eager env step instead of the compiled one")
    args = p.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread, {'eager' if args.eager else 'compiled'}; microseconds per step")
    print(f"{'envs':>6} {'finished':>9} {'step':>8} {'transition':>11} {'renewal':>8} {'(reservoir)':>12} {'rest':>7}")
    for n in args.sizes:
        r = breakdown(n, args.steps, not args.eager)
        print(f"{n:>6} {r['finished_per_step']:>9.1f} {r['step_us']:>8.0f} {r['transition']:>11.0f} "
              f"{r['renewal']:>8.0f} {r.get('of which reservoir', 0.0):>12.0f} {r['rest']:>7.0f}")


if __name__ == "__main__":
    main()
