"""Evaluate a teacher (or any deterministic policy) in the embedded point-control env, through `eyas.envs.rollout`."""
from __future__ import annotations

from typing import Any, Callable

import torch
from tensordict import TensorDict

from .base import Teacher, check_teacher_env


def policy_fn_for(actor: Teacher | Callable[[TensorDict], torch.Tensor]):
    """A rollout policy for a `Teacher` (reads its observation group) or a TensorDict callable."""
    if isinstance(actor, Teacher):
        return lambda obs, reset_mask: actor.act_on(obs)
    return lambda obs, reset_mask: actor(obs)


@torch.no_grad()
def evaluate_actor(
    actor: Teacher | Callable[[TensorDict], torch.Tensor], env: Any, num_episodes: int, seed: int | None = 0
) -> dict:
    """Run `num_episodes` deterministic episodes (`eyas.envs.evaluate`); `EpisodeStats.summary()`, plus
    `final_position_error_all_mean`: |p - target| after the last step of every episode, terminated ones included
    (error at termination). `final_position_error_mean` counts the episodes that reached the 5 s time limit."""
    from eyas.envs import evaluate

    if isinstance(actor, Teacher):
        check_teacher_env(actor, env)
    stats = evaluate(policy_fn_for(actor), env, num_episodes, tail_steps=100, seed=seed)
    return stats.summary() | {"final_position_error_all_mean": float(stats.final_position_error.numpy().mean())}


def env_cfg_from_dict(values: dict | None, **overrides: Any):
    """`PointControlEnvCfg` from a (possibly partial) `PointControlEnvCfg.to_dict()`, with `overrides` applied."""
    from eyas.envs import PointControlEnvCfg

    return PointControlEnvCfg.from_dict(values, **overrides)
