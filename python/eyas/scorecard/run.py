"""Fly policies through scorecard cases on the same episodes: `Scorecard`.

One env per group (`Case.groups`), its dynamics fixed per row (drawn once from the group's seed), its scenario with
`ScenarioCfg.full_step` (one compiled step for every case), reset with the group's seed before each policy flies:
every policy sees the same dynamics, initial states, tasks and observation noise (the env's noise generator draws
the same numbers at every step whatever the episodes do). Results: ``{case: {group: {policy: summary}}}`` with
`EpisodeStats.summary` per entry (times in seconds).
"""
from __future__ import annotations

import dataclasses
import time
import zlib
from pathlib import Path
from typing import Callable

import torch

from eyas import sim
from eyas.envs import PointControlEnv, PointControlEnvCfg
from eyas.envs.rollout import EpisodeStats, rollout, student_policy_fn
from eyas.errors import UsageError

from .cases import RANDOMIZED, Case, Group
from .platforms import HOLDOUT_NAMES, platform_params

DT = 0.01  # [s] every scorecard platform's step (settling times are reported in seconds)


class ScorecardError(UsageError):
    """Bad scorecard input (a policy file, a dynamics file)."""


def group_seed(seed: int, case: Case, group: Group) -> int:
    """The seed of a group's episodes: fixed by the run's seed and the group's name (not its position)."""
    return (seed * 1_000_003 + zlib.crc32(case.label(group).encode())) % 2**31


def group_params(group: Group, count: int, generator: torch.Generator, dtype: torch.dtype) -> sim.Params:
    """``count`` parameter sets of the group's dynamics."""
    if group.dynamics == RANDOMIZED:
        return sim.sample_domain_randomized_params(count, generator, dtype=dtype, device="cpu")
    if group.dynamics in sim.MODEL_NAMES:
        return sim.model_params(group.dynamics, dtype).expand(count)
    if group.dynamics in HOLDOUT_NAMES:
        return platform_params(group.dynamics, dtype).expand(count)
    return dynamics_file(group.dynamics, dtype).expand(count)


def dynamics_file(path: str, dtype: torch.dtype = torch.float32) -> sim.Params:
    """The parameters of an l2f JSON file (l2f's `parameters_to_json` schema), checked."""
    try:
        params = sim.Params.from_l2f_json(Path(path).read_text(), dtype=dtype)
        params.validate()
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ScorecardError(f"--dynamics {path}: not l2f dynamics parameters ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:160] if str(e) else ''})") from e
    return params


class Scorecard:
    """The cases to fly, with ``episodes`` per group, from ``seed``, on ``device``."""

    def __init__(self, cases: dict[str, Case], episodes: int = 256, seed: int = 0, device="cpu",
                 dtype: str = "float32", compile: bool | None = None):
        self.cases, self.episodes, self.seed = cases, int(episodes), int(seed)
        self.device, self.dtype, self.compile = torch.device(device), dtype, compile
        self._envs: dict[str, tuple[PointControlEnv, int]] = {}

    def env(self, case: Case, group: Group) -> tuple[PointControlEnv, int]:
        """The group's env (built once) and the seed its episodes are reset with."""
        key = case.label(group)
        if key not in self._envs:
            seed = group_seed(self.seed, case, group)
            params = group_params(group, self.episodes, torch.Generator().manual_seed(seed), getattr(torch, self.dtype))
            cfg = PointControlEnvCfg(num_envs=self.episodes, device=str(self.device), dtype=self.dtype, seed=seed,
                                     dynamics=params.to(self.device), max_episode_length=case.max_episode_length,
                                     observation_noise=case.noise, compile=self.compile,
                                     scenario=dataclasses.replace(group.scenario, full_step=True))
            self._envs[key] = (PointControlEnv(cfg), seed)
        return self._envs[key]

    @torch.no_grad()
    def fly(self, policy: torch.nn.Module, case: Case, group: Group, record: int = 0) -> EpisodeStats:
        """One episode per row of the group's env with ``policy`` (a `StudentPolicy`, or any module with its
        step-wise interface); ``record``: flights kept for the plots."""
        env, seed = self.env(case, group)
        return rollout(env, student_policy_fn(policy.to(self.device).eval()), seed=seed, rms_from=case.rms_from,
                       record_rows=record)

    def run(self, policies: dict[str, torch.nn.Module], record: int = 0,
            progress: Callable[[str], None] | None = None) -> dict:
        """``{"results": {case: {group: {policy: summary}}}, "flights": {...}, ...}``: every policy on every group."""
        results, flights, started = {}, {}, time.perf_counter()
        for case in self.cases.values():
            results[case.name] = {}
            for group in case.groups:
                row = results[case.name][group.label] = {}
                for name, policy in policies.items():
                    keep = record if case.headline == "rms" and group.dynamics in (RANDOMIZED, "crazyflie") else 0
                    stats = self.fly(policy, case, group, keep)
                    row[name] = summary(stats)
                    if keep:
                        flights.setdefault(case.label(group), {})[name] = stats.trajectories
                if progress is not None:
                    progress(case.label(group))
        return {"results": results, "flights": flights, "episodes_per_group": self.episodes, "seed": self.seed,
                "seconds": time.perf_counter() - started,
                "cases": {c.name: {"headline": c.headline, "groups": [g.label for g in c.groups],
                                   "episode_steps": c.max_episode_length, "ramp_steps": c.rms_from}
                          for c in self.cases.values()}}


def summary(stats: EpisodeStats) -> dict:
    """`EpisodeStats.summary` with the settling time in seconds and the per-episode results the selection compares."""
    out = stats.summary(per_episode=True)
    out["settling_time_mean"] = out.pop("settling_steps_mean") * DT
    out["per_episode"]["rms_error"] = stats.rms_error.tolist()
    return out
