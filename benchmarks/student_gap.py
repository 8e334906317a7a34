#!/usr/bin/env python
"""Where a distilled student falls short of its privileged teacher: both fly the same randomised episodes.

Each of `--episodes` environments flies one 500-step episode of RAPTOR-randomised dynamics (same seed, so the same
parameter sets and initial states for both actors). Prints

* the share of episodes ended by each termination condition, and the share of terminated episodes per quintile
  of the thrust-to-weight ratio, the rotor time constant and the initial tilt, for the student and the teacher,
  and their ratio;
* the student's imitation error (MSE to the teacher's action on the student's own states, as DAgger labels them)
  by time in the episode, for episodes it survives and episodes it does not;
* the teacher flying with random action noise of the student's error size (per step in the episode: white, and
  correlated over ~10 steps), to tell an error that acts like noise from a systematic one.

    python benchmarks/student_gap.py STUDENT.h5 [--teacher fixtures/teachers/privileged] [--episodes 3000]
"""
from __future__ import annotations

import argparse
import math

import torch

from eyas import sim
from eyas.envs.fly import load_policy
from eyas.envs.point_control import PointControlEnv, PointControlEnvCfg
from eyas.teachers import load_teacher

WINDOWS = ((0, 10), (10, 25), (25, 50), (50, 100), (100, 200), (200, 500))


def noisy(act, std_by_step: torch.Tensor, correlation_steps: float, seed: int):
    """``act`` plus Gaussian noise of per-dimension std ``std_by_step[t]`` at step t of the episode, white
    (``correlation_steps`` 0) or an AR(1) process with that time constant; clipped to [-1, 1] like the env."""
    g, state = torch.Generator().manual_seed(seed), {"t": 0, "z": None}
    a = math.exp(-1 / correlation_steps) if correlation_steps > 0 else 0.0

    def act_noisy(obs, reset):
        clean = act(obs, reset)
        eps = torch.randn(clean.shape, generator=g)
        state["z"] = eps if state["z"] is None else a * state["z"] + math.sqrt(1 - a * a) * eps
        std = float(std_by_step[min(state["t"], len(std_by_step) - 1)])
        state["t"] += 1
        return (clean + std * state["z"]).clamp(-1, 1)
    return act_noisy


@torch.no_grad()
def fly_once(act, teacher, episodes: int, seed: int) -> dict:
    """One episode per environment, `act(obs, reset_mask)` flying; per-episode termination, per-step MSE to the teacher (until done)."""
    env = PointControlEnv(PointControlEnvCfg(num_envs=episodes, seed=seed, dynamics="randomized"))
    features = {
        "thrust-to-weight": sim.thrust_to_weight_ratio(env.params).clone(),
        "rotor time constant [s]": env.params.dynamics.rotor_time_constants_rising.mean(-1).clone(),
        "initial tilt [rad]": 2 * torch.acos(env.state.orientation[:, 0].abs().clamp(max=1)),
        "disturbance force / weight": torch.linalg.vector_norm(env.state.force, dim=-1)
        / (env.params.dynamics.mass * torch.linalg.vector_norm(env.params.dynamics.gravity, dim=-1)),
    }
    obs = env.get_observations()
    running = torch.ones(episodes, dtype=torch.bool)
    terminated = torch.zeros(episodes, dtype=torch.bool)
    causes: dict[str, torch.Tensor] = {}
    reset = torch.ones(episodes, dtype=torch.bool)
    squared_error = torch.full((env.max_episode_length, episodes), float("nan"))
    for t in range(env.max_episode_length):
        actions = act(obs, reset)
        reset = torch.zeros_like(reset)
        squared_error[t] = torch.where(running, (actions - teacher.act_on(obs)).square().mean(-1), float("nan"))
        obs, _, dones, extras = env.step(actions)
        ended = extras["terminated"].bool() & running
        terminated |= ended
        for name, term in extras["termination_terms"].items():
            causes[name] = causes.get(name, torch.zeros_like(ended)) | (term & ended)
        running &= ~dones.bool()
    return {"terminated": terminated, "causes": causes, "features": features, "squared_error": squared_error}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("student", help="rl-tools .h5 student (e.g. runs/.../best_actor.h5)")
    parser.add_argument("--teacher", default="fixtures/teachers/privileged")
    parser.add_argument("--episodes", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=77)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    student, teacher = load_policy(args.student), load_teacher(args.teacher)
    student.reset(batch_size=args.episodes)
    flown = {
        "student": fly_once(lambda obs, reset: student(obs["policy"], reset=reset), teacher, args.episodes, args.seed),
        "teacher": fly_once(lambda obs, reset: teacher.act_on(obs), teacher, args.episodes, args.seed),
    }
    s, t = flown["student"]["terminated"].float(), flown["teacher"]["terminated"].float()
    print(f"{args.episodes} randomised episodes (seed {args.seed}): terminated student {100 * s.mean():.1f} %, "
          f"teacher {100 * t.mean():.1f} %, ratio {s.mean() / t.mean().clamp(min=1e-9):.2f}")
    print("terminated by condition (an episode may meet several):")
    for name in flown["student"]["causes"]:
        cs, ct = (flown[k]["causes"][name].float().mean() for k in ("student", "teacher"))
        print(f"  {name:<20} student {100 * cs:5.1f} %  teacher {100 * ct:5.1f} %")
    for name, value in flown["teacher"]["features"].items():
        edges = torch.quantile(value.float(), torch.tensor([0.2, 0.4, 0.6, 0.8]))
        bins = torch.bucketize(value.float(), edges)
        print(f"\nterminated by {name} quintile:")
        print(f"  {'range':>17}  {'student':>8}  {'teacher':>8}  {'ratio':>6}")
        for b in range(5):
            rows = bins == b
            rs, rt = s[rows].mean(), t[rows].mean()
            print(f"  {value[rows].min():7.3g}..{value[rows].max():<7.3g}  {100 * rs:7.1f}%  {100 * rt:7.1f}%"
                  f"  {rs / rt.clamp(min=1e-9):6.2f}")
    error, failed = flown["student"]["squared_error"], flown["student"]["terminated"]
    print("\nstudent imitation error (MSE to the teacher's action on the student's states) by step in the episode:")
    print(f"  {'steps':>9}  {'survived':>9}  {'terminated':>10}")
    for lo, hi in WINDOWS:
        window = error[lo:hi]
        survived, crashed = window[:, ~failed].nanmean(), window[:, failed].nanmean()
        print(f"  {lo:4d}-{hi:<4d}  {survived:9.4f}  {crashed:10.4f}")

    # the student's error size by step (all its running episodes), smoothed over the same windows
    std_by_step = torch.empty(error.shape[0])
    for lo, hi in WINDOWS:
        std_by_step[lo:hi] = error[lo:hi].nanmean().sqrt()
    print("\nteacher with random action noise of the student's error size (same episodes):")
    teacher_act = lambda obs, reset: teacher.act_on(obs)  # noqa: E731
    for label, steps in (("white", 0.0), ("correlated, 10 steps", 10.0)):
        flown_noisy = fly_once(noisy(teacher_act, std_by_step, steps, args.seed), teacher, args.episodes, args.seed)
        print(f"  {label:<22} terminated {100 * flown_noisy['terminated'].float().mean():5.1f} %  "
              f"(student {100 * s.mean():.1f} %, teacher without noise {100 * t.mean():.1f} %)")


if __name__ == "__main__":
    main()
