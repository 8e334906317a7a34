"""The one episode loop of eyas: fly the rows of an env until each has finished its episodes, calling back per step.

Collection (teachers label what the student or the teachers fly), evaluation (embedded env and Isaac Lab tasks),
teacher evaluation, the scorecard and recorded flights all run `rollout` and read its `EpisodeStats`. (APG's
differentiable flights call the same env step, `eyas.envs.step.advance`, without auto-reset, `eyas.distill.apg`.)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from tensordict import TensorDict

PolicyFn = Callable[[TensorDict, torch.Tensor], torch.Tensor]  # (obs, reset_mask) -> actions
StepHook = Callable[[int, TensorDict, torch.Tensor], None]  # (step, obs, running) before the policy acts

RECORDED = ("position", "orientation", "linear_velocity", "angular_velocity", "rpm")  # state fields of a flight
PER_EPISODE = ("returns", "lengths", "terminated", "position_error", "final_position_error", "rms_error",
               "settling_steps")  # `EpisodeStats`' per-episode tensors, in field order


@dataclass
class EpisodeStats:
    """Per-episode results of a rollout (CPU tensors), ordered by (episode index within its row, row).

    ``position_error``: mean |p - target| over the episode's last ``tail_steps`` steps (all of them if it was
    shorter); ``final_position_error``: |p - target| after its last step; ``rms_error``: the root mean square of
    |p - target| over its steps from ``rms_from`` on (a tracking error, after a reference's ramp); ``settling_steps``:
    the steps after which |p - target| stays within ``settle_radius``. All NaN where the env reports no
    ``extras["position_error"]`` (Isaac Lab tasks); the target is the row's reference where it moves."""

    returns: torch.Tensor  # float64
    lengths: torch.Tensor  # int64
    terminated: torch.Tensor  # bool
    position_error: torch.Tensor  # float64
    final_position_error: torch.Tensor  # float64
    rms_error: torch.Tensor  # float64
    settling_steps: torch.Tensor  # float64
    tail_steps: int = 100
    trajectories: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.returns)

    def __getitem__(self, rows: slice) -> "EpisodeStats":
        return EpisodeStats(*(getattr(self, f)[rows] for f in PER_EPISODE), tail_steps=self.tail_steps)

    @classmethod
    def concat(cls, parts: list["EpisodeStats"]) -> "EpisodeStats":
        """The episodes of several rollouts, in order (trajectories not kept)."""
        return cls(*(torch.cat([getattr(p, f) for p in parts]) for f in PER_EPISODE), tail_steps=parts[0].tail_steps)

    @property
    def episodes(self) -> int:
        return len(self.returns)

    @property
    def return_mean(self) -> float:
        return float(self.returns.numpy().mean())

    @property
    def episode_length_mean(self) -> float:
        return float(self.lengths.numpy().mean())

    @property
    def share_terminated(self) -> float:
        return float(self.terminated.numpy().mean())

    @property
    def position_error_mean(self) -> float:
        """Mean `position_error` of the episodes that were not terminated (NaN if all were)."""
        return _mean_completed(self.position_error, self.terminated)

    @property
    def final_position_error_mean(self) -> float:
        return _mean_completed(self.final_position_error, self.terminated)

    def summary(self, per_episode: bool = False) -> dict:
        """The statistics every report uses (population std over episodes; 95 % intervals: Wilson's for the
        terminated share, mean +- 1.96 standard errors for the position error); ``per_episode`` adds each episode's
        ``terminated`` and ``position_error`` (lists, under "per_episode": what paired comparisons need)."""
        paired = ({"per_episode": {"terminated": self.terminated.tolist(),
                                   "position_error": self.position_error.tolist()}} if per_episode else {})
        return paired | {"episodes": self.episodes,
                "return_mean": self.return_mean, "return_std": float(self.returns.numpy().std()),
                "episode_length_mean": self.episode_length_mean,
                "episode_length_std": float(self.lengths.numpy().std()),
                "share_terminated": self.share_terminated,
                "share_terminated_ci95": list(wilson_interval(self.share_terminated, self.episodes)),
                "position_error_mean": self.position_error_mean,
                "position_error_ci95": list(_mean_interval(self.position_error[~self.terminated])),
                "final_position_error_mean": self.final_position_error_mean,
                "rms_error_mean": _mean_completed(self.rms_error, self.terminated),
                "rms_error_ci95": list(_mean_interval(self.rms_error[~self.terminated])),
                "settling_steps_mean": _mean_completed(self.settling_steps, self.terminated)}


def _mean_completed(values: torch.Tensor, terminated: torch.Tensor) -> float:
    completed = ~terminated
    return float(values[completed].numpy().mean()) if bool(completed.any()) else math.nan


def wilson_interval(share: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a binomial share observed over ``n`` trials (NaNs for none)."""
    if n < 1:
        return math.nan, math.nan
    denominator = 1 + z * z / n
    centre = (share + z * z / (2 * n)) / denominator
    half = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def _mean_interval(values: torch.Tensor, z: float = 1.96) -> tuple[float, float]:
    """Normal-approximation 95 % interval of the mean of ``values`` (NaNs for fewer than two)."""
    x = values.double().numpy()
    x = x[np.isfinite(x)]
    if len(x) < 2:
        return math.nan, math.nan
    half = z * float(x.std(ddof=1)) / math.sqrt(len(x))
    return float(x.mean()) - half, float(x.mean()) + half


class _FlightRecorder:
    """The first episode of the first ``rows`` rows: the state and the reference position before every step, and
    the action taken."""

    def __init__(self, rows: int):
        self.flights = [{key: [] for key in (*RECORDED, "reference", "action")} for _ in range(rows)]
        self.done = [False] * rows

    def before_step(self, env, actions: torch.Tensor) -> None:
        state, reference = env.state, env.reference()[0]
        for i, flight in enumerate(self.flights):
            if not self.done[i]:
                flight["action"].append(actions[i].detach().cpu().numpy())
                flight["reference"].append(reference[i].cpu().numpy())
                for key in RECORDED:
                    flight[key].append(getattr(state, key)[i].cpu().numpy())

    def episodes_ended(self, rows: list[int]) -> None:
        for i in rows:
            if i < len(self.done):
                self.done[i] = True

    def trajectories(self, env) -> list[dict]:
        return [{k: np.stack(v) for k, v in flight.items()} | {"dt": float(env.params.integration.dt[i])}
                for i, flight in enumerate(self.flights)]


class _Episodes:
    """The running episode of every row (return, length, position errors) and the finished ones' slots
    ``out[key][episode index, row]``."""

    def __init__(self, n: int, per_row: int, tail_steps: int, rms_from: int, settle_radius: float, device,
                 errors: bool = True):
        f64 = {"dtype": torch.float64, "device": device}
        self.rows, self.per_row = torch.arange(n, device=device), per_row
        self.rms_from, self.settle_radius = rms_from, settle_radius
        self.returns, self.tail = torch.zeros(n, **f64), torch.zeros(n, tail_steps if errors else 0, **f64)
        self.squares, self.counted, self.settled = torch.zeros(n, **f64), torch.zeros(n, **f64), torch.zeros(n, **f64)
        self.lengths = torch.zeros(n, dtype=torch.long, device=device)
        self.finished = torch.zeros(n, dtype=torch.long, device=device)
        self.out = {key: torch.full((per_row, n), math.nan, **f64) for key in PER_EPISODE}
        self.out["lengths"] = torch.zeros(per_row, n, dtype=torch.long, device=device)
        self.out["terminated"] = torch.zeros(per_row, n, dtype=torch.bool, device=device)
        self.restarted = ((self.returns, self.lengths, self.tail, self.squares, self.counted, self.settled) if errors
                          else (self.returns, self.lengths))  # the buffers a new episode zeroes

    def step(self, rewards: torch.Tensor, error: torch.Tensor | None) -> None:
        self.returns += rewards.to(torch.float64)
        if error is not None:
            error = error.to(torch.float64)
            self.tail[self.rows, self.lengths % self.tail.shape[1]] = error
            late = (self.lengths >= self.rms_from).to(torch.float64)
            self.squares += late * error * error
            self.counted += late
            self.settled = torch.where(error > self.settle_radius, (self.lengths + 1).to(torch.float64), self.settled)
        self.lengths += 1

    def end(self, ended: torch.Tensor, terminated: torch.Tensor, error: torch.Tensor | None) -> None:
        """Store the episodes ``ended`` rows finished (the first ``per_row`` of each row) and restart them."""
        counted = ended[self.finished[ended] < self.per_row]
        k, out = self.finished[counted], self.out
        out["returns"][k, counted] = self.returns[counted]
        out["lengths"][k, counted] = self.lengths[counted]
        out["terminated"][k, counted] = terminated[counted].bool()
        if error is not None:
            # a full buffer holds exactly the last `tail_steps` errors; a partial one the first `length` slots
            tail = self.tail.shape[1]
            out["position_error"][k, counted] = self.tail[counted].sum(-1) / self.lengths[counted].clamp(max=tail)
            out["final_position_error"][k, counted] = error[counted].to(torch.float64)
            out["rms_error"][k, counted] = (self.squares[counted] / self.counted[counted]).sqrt()
            out["settling_steps"][k, counted] = self.settled[counted]
        self.finished[ended] += 1
        for buffer in self.restarted:
            buffer[ended] = 0


@torch.no_grad()
def rollout(env, policy_fn: PolicyFn, *, num_episodes: int | None = None, on_step: StepHook | None = None,
            reset: bool = True, seed: int | None = None, tail_steps: int = 100, record_rows: int = 0,
            sync_every: int = 1, rms_from: int = 0, settle_radius: float = 0.1,
            position_errors: bool = True) -> EpisodeStats:
    """Fly ``env``'s rows until every row has finished its ``ceil(num_episodes / num_envs)`` episodes (default one
    each), the env restarting episodes itself; return the first ``num_episodes`` of them.

    ``policy_fn(obs, reset_mask)``: ``reset_mask`` marks the rows that start an episode at this step (all at the
    first); recurrent policies reset their state there. ``on_step(t, obs, running)`` runs before the policy acts,
    ``running`` marking the rows whose counted episodes still run. ``reset``: `env.reset(seed=seed)` first, else
    fly from `env.get_observations()` (a fresh env). ``record_rows``: record the first episode of that many rows
    (`EpisodeStats.trajectories`, embedded env). ``sync_every``: steps between the host's checks for the end
    (a GPU synchronises at each). ``rms_from`` and ``settle_radius``: `EpisodeStats.rms_error` and
    ``settling_steps``; ``position_errors`` False leaves every position-error statistic NaN (collection reads
    returns, lengths and terminations only). Every row flies at most ``per_row * env.max_episode_length`` steps."""
    n, device = env.num_envs, env.device
    per_row = 1 if num_episodes is None else math.ceil(num_episodes / n)
    obs = env.reset(seed=seed)[0] if reset else env.get_observations()
    reset_mask = torch.ones(n, dtype=torch.bool, device=device)
    episodes = _Episodes(n, per_row, tail_steps, rms_from, settle_radius, device, position_errors)
    recorder = _FlightRecorder(min(record_rows, n))
    for t in range(per_row * int(env.max_episode_length)):
        if on_step is not None:
            on_step(t, obs, episodes.finished < per_row)
        actions = policy_fn(obs, reset_mask)
        if recorder.flights:
            recorder.before_step(env, actions)
        obs, rewards, dones, extras = env.step(actions)
        error = extras.get("position_error") if position_errors else None
        episodes.step(rewards, error)
        done = dones.bool()
        if bool(done.any()):
            ended = done.nonzero()[:, 0]
            episodes.end(ended, extras["terminated"], error)
            if recorder.flights:  # .tolist() synchronises a GPU: only when flights are recorded
                recorder.episodes_ended(ended.tolist())
        reset_mask = done
        if (t + 1) % sync_every == 0 and not bool((episodes.finished < per_row).any()):
            break
    take = n * per_row if num_episodes is None else num_episodes
    flat = {k: v.reshape(-1)[:take].cpu() for k, v in episodes.out.items()}
    return EpisodeStats(**flat, tail_steps=tail_steps,
                        trajectories=recorder.trajectories(env) if recorder.flights else [])


def evaluate(policy_fn: PolicyFn, env, num_episodes: int, tail_steps: int = 100, record_envs: int = 0,
             seed: int | None = None) -> EpisodeStats:
    """`num_episodes` episodes of `policy_fn` in `env` (reset with ``seed`` first): every row contributes its first
    ceil(num_episodes / num_envs) episodes, ordered by (episode index, row), so long and short episodes are
    sampled without bias. `record_envs` > 0 records the first episode of that many rows (`eyas.envs.plots`)."""
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
    return rollout(env, policy_fn, num_episodes=num_episodes, seed=seed, tail_steps=tail_steps,
                   record_rows=record_envs)


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
