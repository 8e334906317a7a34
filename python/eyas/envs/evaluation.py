"""`evaluate`: fly a policy for a number of episodes in a `PointControlEnv` and summarise the flights."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from tensordict import TensorDict

PolicyFn = Callable[[TensorDict, torch.Tensor], torch.Tensor]


@dataclass
class EvaluationResult:
    """Per-episode results (numpy arrays, one entry per evaluated episode) and their summary."""

    returns: np.ndarray
    lengths: np.ndarray
    terminated: np.ndarray
    position_error_tail: np.ndarray  # mean |p - target| over the episode's last `tail_steps` steps
    tail_steps: int
    trajectories: list[dict] = field(default_factory=list)

    @property
    def num_episodes(self) -> int:
        return len(self.returns)

    @property
    def mean_return(self) -> float:
        return float(self.returns.mean())

    @property
    def mean_length(self) -> float:
        return float(self.lengths.mean())

    @property
    def share_terminated(self) -> float:
        return float(self.terminated.mean())

    @property
    def mean_position_error(self) -> float:
        """Mean position error over the last `tail_steps` steps of the episodes that were not terminated
        (NaN if all were)."""
        completed = ~self.terminated
        return float(self.position_error_tail[completed].mean()) if completed.any() else math.nan

    def summary(self) -> dict:
        return {
            "episodes": self.num_episodes,
            "mean_return": self.mean_return,
            "mean_length": self.mean_length,
            "share_terminated": self.share_terminated,
            f"mean_position_error_last_{self.tail_steps}": self.mean_position_error,
        }


@torch.no_grad()
def evaluate(policy_fn: PolicyFn, env, num_episodes: int, tail_steps: int = 100,
             record_envs: int = 0, seed: int | None = None) -> EvaluationResult:
    """Run `num_episodes` episodes of `policy_fn` in `env` (a `PointControlEnv`, reset first).

    policy_fn(obs, reset_mask) -> actions (num_envs, 4): `obs` is the env's observation TensorDict and
    `reset_mask` (num_envs,) bool marks environments that start a new episode at this step (all True at
    the first call); recurrent policies must reset their hidden state there.

    Every environment contributes its first ceil(num_episodes / num_envs) episodes, ordered by
    (episode index, environment index), so long and short episodes are sampled without bias.
    `record_envs` > 0 records the first episode of that many environments (positions, actions, ...) for
    plotting (`eyas.envs.plots`)."""
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
    n = env.num_envs
    per_env = math.ceil(num_episodes / n)
    device = env.device
    obs, _ = env.reset(seed=seed)
    reset_mask = torch.ones(n, dtype=torch.bool, device=device)
    episode_return = torch.zeros(n, dtype=torch.float64, device=device)
    episode_length = torch.zeros(n, dtype=torch.long, device=device)
    error_buffer = torch.zeros(n, tail_steps, dtype=torch.float64, device=device)
    finished = torch.zeros(n, dtype=torch.long, device=device)
    records: list[tuple[int, int, float, int, bool, float]] = []  # (episode index, env, return, length, terminated, error)
    recording = [{"position": [], "orientation": [], "linear_velocity": [], "angular_velocity": [], "action": [],
                  "rpm": []} for _ in range(min(record_envs, n))]
    recording_done = [False] * len(recording)

    while bool((finished < per_env).any()):
        actions = policy_fn(obs, reset_mask)
        state_before = env.state
        obs, rewards, dones, extras = env.step(actions)
        for i, rec in enumerate(recording):
            if not recording_done[i]:
                rec["action"].append(actions[i].detach().cpu().numpy())
                for key in ("position", "orientation", "linear_velocity", "angular_velocity", "rpm"):
                    rec[key].append(getattr(state_before, key)[i].cpu().numpy())
        episode_return += rewards.to(torch.float64)
        error_buffer[torch.arange(n, device=device), episode_length % tail_steps] = extras["position_error"].to(torch.float64)
        episode_length += 1
        done = dones.bool()
        if bool(done.any()):
            ids = done.nonzero()[:, 0]
            lengths = episode_length[ids]
            counts = lengths.clamp(max=tail_steps)
            tail_error = error_buffer[ids].sum(-1) / counts
            # a full buffer holds exactly the last `tail_steps` errors; a partial one the first `length` slots
            rows = zip(ids.tolist(), finished[ids].tolist(), episode_return[ids].tolist(), lengths.tolist(),
                       extras["terminated"][ids].tolist(), tail_error.tolist())
            for env_id, episode_index, ret, length, term, err in rows:
                if episode_index < per_env:
                    records.append((episode_index, env_id, ret, length, bool(term), err))
                if env_id < len(recording) and not recording_done[env_id]:
                    recording_done[env_id] = True
            finished[ids] += 1
            episode_return[ids] = 0
            episode_length[ids] = 0
            error_buffer[ids] = 0
        reset_mask = done

    records.sort()
    records = records[:num_episodes]
    trajectories = [{k: np.stack(v) for k, v in rec.items()} | {"dt": float(env.params.integration.dt[i])}
                    for i, rec in enumerate(recording)]
    return EvaluationResult(
        returns=np.array([r[2] for r in records]),
        lengths=np.array([r[3] for r in records]),
        terminated=np.array([r[4] for r in records], dtype=bool),
        position_error_tail=np.array([r[5] for r in records]),
        tail_steps=tail_steps,
        trajectories=trajectories,
    )


def student_policy_fn(policy: torch.nn.Module, obs_group: str = "policy") -> PolicyFn:
    """Adapter for a recurrent `eyas.StudentPolicy` (or any module with `reset(batch_size=...)` and
    `policy(obs, reset=mask)`): the hidden state is re-initialised where `reset_mask` is True."""
    batch_size = None

    def act(obs: TensorDict, reset_mask: torch.Tensor) -> torch.Tensor:
        nonlocal batch_size
        x = obs[obs_group]
        if batch_size != x.shape[0]:
            batch_size = x.shape[0]
            policy.reset(batch_size=batch_size, device=x.device)
        return policy(x, reset=reset_mask)
    return act
