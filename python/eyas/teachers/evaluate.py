"""Evaluate a teacher (or any deterministic policy) in the embedded point-control env."""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import numpy as np
import torch
from tensordict import TensorDict

from .base import Teacher, check_teacher_env


class _FinalErrorRecorder:
    """Thin proxy around a `PointControlEnv` that records |p - target| at the last step of every episode."""

    def __init__(self, env: Any) -> None:
        self._env = env
        self.final_errors: list[list[float]] = [[] for _ in range(env.num_envs)]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)

    def reset(self, *args, **kwargs):
        self.final_errors = [[] for _ in range(self._env.num_envs)]
        return self._env.reset(*args, **kwargs)

    def step(self, actions: torch.Tensor):
        obs, rewards, dones, extras = self._env.step(actions)
        ids = dones.bool().nonzero()[:, 0]
        if ids.numel():
            for i, err in zip(ids.tolist(), extras["position_error"][ids].tolist()):
                self.final_errors[i].append(err)
        return obs, rewards, dones, extras


def policy_fn_for(actor: Teacher | Callable[[TensorDict], torch.Tensor]):
    """`eyas.envs.evaluate` policy function for a `Teacher` (reads its observation group) or a TensorDict callable."""
    if isinstance(actor, Teacher):
        return lambda obs, reset_mask: actor.act_on(obs)
    return lambda obs, reset_mask: actor(obs)


@torch.no_grad()
def evaluate_actor(
    actor: Teacher | Callable[[TensorDict], torch.Tensor], env: Any, num_episodes: int, seed: int | None = 0
) -> dict:
    """Run `num_episodes` deterministic episodes; summary with mean return, share of terminated episodes and
    position errors.

    `mean_final_position_error`: |p - target| after the last step of the episodes that were not terminated
    (i.e. at the 5 s time limit); `mean_final_position_error_all` includes terminated ones (error at termination);
    `mean_position_error_last_100`: `eyas.envs.evaluate`'s mean over the last 100 steps of non-terminated episodes.
    """
    from eyas.envs import evaluate

    if isinstance(actor, Teacher):
        check_teacher_env(actor, env)
    recorder = _FinalErrorRecorder(env)
    result = evaluate(policy_fn_for(actor), recorder, num_episodes, tail_steps=100, seed=seed)
    # same episode selection as `evaluate`: the first ceil(num_episodes / num_envs) episodes of every env,
    # ordered by (episode index, env index), truncated to num_episodes
    per_env = math.ceil(num_episodes / env.num_envs)
    rows = sorted((k, i, e) for i, errs in enumerate(recorder.final_errors) for k, e in enumerate(errs[:per_env]))
    final = np.array([e for _, _, e in rows[:num_episodes]])
    completed = ~result.terminated
    return {
        "episodes": result.num_episodes,
        "mean_return": result.mean_return,
        "mean_length": result.mean_length,
        "share_terminated": result.share_terminated,
        "mean_final_position_error": float(final[completed].mean()) if completed.any() else math.nan,
        "mean_final_position_error_all": float(final.mean()),
        "mean_position_error_last_100": result.mean_position_error,
    }


def env_cfg_from_dict(values: dict | None, **overrides: Any):
    """`PointControlEnvCfg` from a (possibly partial) `PointControlEnvCfg.to_dict()`, with `overrides` applied."""
    from eyas import envs, sim

    cfg = envs.PointControlEnvCfg()
    sub = {"init": envs.InitCfg, "termination": envs.TerminationCfg, "reward": envs.RewardCfg,
           "observation_noise": envs.ObservationNoiseCfg}
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        if values is None or f.name not in values or f.name == "dynamics":
            continue
        value = values[f.name]
        if f.name in sub:
            known = {g.name for g in dataclasses.fields(sub[f.name])}
            value = sub[f.name](**{k: v for k, v in value.items() if k in known})
        elif f.name == "domain_randomization":
            value = sim.DomainRandomizationRanges(**{k: (tuple(v) if isinstance(v, list) else v)
                                                     for k, v in value.items()})
        kwargs[f.name] = value
    kwargs.update(overrides)
    return dataclasses.replace(cfg, **kwargs)
