#!/usr/bin/env python
"""Environment throughput: eyas' PointControlEnv vs l2f's vectorised C++ environment.

Measures environment steps per second (number of envs x steps per second) at 1, 64, 1,024, 4,096 and 16,384
environments on CPU (and CUDA when available), with randomised dynamics and random actions in [-1, 1]:

* eyas env   `PointControlEnv.step`: physics, 22-D + 74-D observations, reward, termination, auto-reset
               (new dynamics parameters and initial state for finished episodes), on the compiled path
               (`eyas.envs.step.env_step` under torch.compile) and the eager one (`--paths`)
* eyas sim   the env's RK4 physics alone (`eyas.sim.fused.step_packed`), compiled or eager alike
* l2f        `vectorN.step` + `observe` + `terminated` + `sample_initial_state_if_truncated` (the eyas env's work
               less the reward, the 74-D teacher observation and re-drawing parameters at every episode start), at
               the sizes l2f compiles (1 ... 8192); only if `import l2f` works. Its OpenMP threads and torch's
               intra-op threads use the same cores. Random actions end episodes within ~20-50 steps, so resets
               weigh far more here than in training.

    python benchmarks/bench_env.py [--sizes 1 64 1024 4096 16384] [--seconds 2] [--devices cpu cuda] [--threads N]
                                   [--paths compiled eager] [--json rows.json]

`--json PATH` writes one row per (device, path, size): num_envs, path, device, eyas_env_steps_per_s,
eyas_sim_steps_per_s, l2f_steps_per_s (null without l2f or at a size it does not compile) and ratio (env / l2f).
The compiled path's first compile (~30-60 s on 2 cores, seconds with inductor's cache) is not timed.

`--threads N` sets torch's intra-op threads and l2f's OpenMP threads (OMP_NUM_THREADS) alike; on a shared or
busy machine use 1 (oversubscribed threads slow both down by an order of magnitude).
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from eyas.compilation import compiled_function
from eyas.envs import PointControlEnv, PointControlEnvCfg
from eyas.sim import fused


def timed(fn, seconds: float, sync) -> float:
    """Calls per second of `fn` over at least `seconds` (after 3 warm-up calls)."""
    for _ in range(3):
        fn()
    sync()
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        if calls % 5 == 0:
            sync()
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                return calls / elapsed


def bench_eyas(num_envs: int, device: str, seconds: float, compiled: bool) -> tuple[float, float]:
    env = PointControlEnv(PointControlEnvCfg(num_envs=num_envs, device=device, dynamics="randomized", seed=0,
                                             compile=compiled))
    generator = torch.Generator(device=device).manual_seed(1)
    actions = torch.rand(64, num_envs, 4, generator=generator, device=device) * 2 - 1
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    k = [0]

    def env_step():
        env.step(actions[k[0] % 64])
        k[0] += 1

    env_rate = timed(env_step, seconds, sync) * num_envs
    state = env.env_state()
    X, P = state.X, state.P
    physics = compiled_function(fused.step_packed) if compiled else fused.step_packed

    staged = torch.empty_like(actions[0])  # one storage offset for every call, as the env stages its actions

    def sim_step():  # the env's physics alone, as it steps it (`eyas.sim.fused`)
        physics(X, staged.copy_(actions[k[0] % 64]), P)
        k[0] += 1

    sim_rate = timed(sim_step, seconds, sync) * num_envs
    return env_rate, sim_rate


def bench_l2f(num_envs: int, seconds: float) -> float | None:
    try:
        import l2f
    except ImportError:
        return None
    if num_envs not in l2f.vector_selector:
        return None
    vector = l2f.vector_selector[num_envs]
    device, env, params, rng = l2f.Device(), vector.VectorEnvironment(), vector.VectorParameters(), vector.VectorRng()
    vector.initialize_environment(device, env)
    vector.initialize_rng(device, rng, 0)
    vector.sample_initial_parameters(device, env, params, rng)
    state, next_state = vector.VectorState(), vector.VectorState()
    vector.sample_initial_state(device, env, params, state, rng)
    observation = np.zeros((num_envs, env.OBSERVATION_DIM), dtype=np.float32)
    terminated = np.zeros(num_envs, dtype=bool)
    actions = np.random.default_rng(1).uniform(-1, 1, (64, num_envs, 4)).astype(np.float32)
    k = [0]

    def step():
        vector.step(device, env, params, state, actions[k[0] % 64], next_state, rng)
        state.assign(next_state)
        vector.observe(device, env, params, state, observation, rng)
        vector.terminated(device, env, params, state, terminated, rng)
        vector.sample_initial_state_if_truncated(device, env, params, state, terminated, rng)
        k[0] += 1

    return timed(step, seconds, lambda: None) * num_envs


def rate(x: float | None) -> str:
    return f"{x:>12,.0f}" if x is not None else f"{'-':>12}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 64, 1024, 4096, 16384])
    parser.add_argument("--seconds", type=float, default=2.0, help="minimum measuring time per entry")
    parser.add_argument("--devices", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch and l2f (OpenMP)")
    parser.add_argument("--paths", nargs="+", default=["compiled", "eager"], choices=["compiled", "eager"])
    parser.add_argument("--json", default=None, metavar="PATH", help="write the rows as JSON")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # read by l2f's OpenMP runtime at import

    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}; env steps per second "
          "(environments x steps / s)\n")
    l2f_rates = {n: bench_l2f(n, args.seconds) for n in args.sizes}
    if all(v is None for v in l2f_rates.values()):
        print("(l2f not importable: no C++ reference column)\n")
    header = (f"{'device':<6} {'path':<9} {'envs':>7} {'eyas env':>12} {'eyas sim':>12} {'l2f (C++)':>12} "
              f"{'env / l2f':>10}")
    print(header)
    print("-" * len(header))
    rows = []
    for device in args.devices:
        for path in args.paths:
            for n in args.sizes:
                env_rate, sim_rate = bench_eyas(n, device, args.seconds, compiled=path == "compiled")
                reference = l2f_rates[n]
                ratio = env_rate / reference if reference else None
                rows.append({"num_envs": n, "path": path, "device": device, "eyas_env_steps_per_s": env_rate,
                             "eyas_sim_steps_per_s": sim_rate, "l2f_steps_per_s": reference, "ratio": ratio})
                print(f"{device:<6} {path:<9} {n:>7} {rate(env_rate)} {rate(sim_rate)} {rate(reference)} "
                      + (f"{ratio:>10.3f}" if ratio else f"{'-':>10}"), flush=True)
    if args.json:
        from eyas.io import atomic_write_json

        atomic_write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
