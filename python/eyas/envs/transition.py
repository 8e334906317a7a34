"""The fixed-shape part of `PointControlEnv.step`, written once and run compiled (torch.compile, inductor) or eager.

`transition` maps the env's tensors to the next ones: RK4 physics (`eyas.sim.step`), termination, reward, episode
counters, the auto-reset of finished rows from a `ResetPool`, and both observation groups. It draws no random
numbers and reads no values on the host (no syncs, no data-dependent shapes), so inductor fuses its ~300 small
ops into a few loops. The random draws stay eager and in one place, the env: action noise before it, observation
noise after it, and the pool's refills.

Compilation (`PointControlEnvCfg.compile`; None reads the environment variable ``EYAS_COMPILE``, default on, ``0``
for eager): one graph with symbolic batch sizes serves every ``num_envs``. Inductor keeps its kernels in
``TORCHINDUCTOR_CACHE_DIR`` (default ``~/.cache/eyas/inductor``), so a second run pays the tracing (seconds), not
the first compile (~30-60 s on 2 cores). A compile that fails leaves one warning and the eager function.
Compiled and eager results agree to float rounding (inductor reorders and fuses arithmetic), not bit for bit.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from eyas import sim
from eyas.sim import Params, State
from eyas.sim.tensor_tree import TensorTree


@dataclass
class ResetPool(TensorTree):
    """Episode starts drawn ahead for randomised dynamics: parameters, initial state, the teacher's dynamics
    features and the rotor speeds that fill the action history. Finished rows take the next unused entries in
    row order (the env refills the pool before fewer than ``num_envs`` remain)."""

    params: Params
    state: State
    features: torch.Tensor       # (P, 48)
    rotor_speeds: torch.Tensor   # (P, 4) in [-1, 1]


def normalized_rotor_speeds(params: Params, state: State) -> torch.Tensor:
    """(B, 4) rotor speeds mapped to [-1, 1] over the action limits (l2f's action scale)."""
    limit = params.dynamics.action_limit
    return (state.rpm - limit.min[:, None]) / (limit.max - limit.min)[:, None] * 2 - 1


def policy_observation(state: State, action_history: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 18 + 4 H) noise-free RAPTOR policy observation: position - target, rotation matrix (row-major),
    linear velocity, body angular velocity, `action_history` (B, H, 4) most recent first (l2f `observe`)."""
    n = state.position.shape[0]
    position = state.position if target is None else state.position - target
    rotation = sim.quaternion_to_rotation_matrix(state.orientation).reshape(n, 9)
    return torch.cat([position, rotation, state.linear_velocity, state.angular_velocity,
                      action_history.reshape(n, -1)], dim=-1)


def termination_terms(params: Params, target: torch.Tensor, s: State) -> dict[str, torch.Tensor]:
    """(N,) bool per termination condition of state `s` (l2f's, the velocity one split by axis)."""
    t = params.mdp.termination
    fast = s.linear_velocity.abs() > t.linear_velocity_threshold[:, None]
    terms = {
        "position": ((s.position - target).abs() > t.position_threshold[:, None]).any(-1),
        "linear_velocity_xy": fast[:, :2].any(-1),
        "linear_velocity_z": fast[:, 2],
        "angular_velocity": (s.angular_velocity.abs() > t.angular_velocity_threshold[:, None]).any(-1),
    }
    terms = {name: t.enabled & term for name, term in terms.items()}
    state = torch.cat([s.position, s.orientation, s.linear_velocity, s.angular_velocity], -1)
    terms["non_finite"] = ~torch.isfinite(state).all(-1)
    return terms


def reward(params: Params, target: torch.Tensor, s: State, actions: torch.Tensor, last_action: torch.Tensor,
           s_next: State) -> torch.Tensor:
    """l2f `Squared` reward (without the termination branch) for the transition s -a-> s_next."""
    w = params.mdp.reward
    dt = params.integration.dt
    position_cost = torch.linalg.vector_norm(s.position - target, dim=-1)
    position_cost = torch.where(w.position_clip > 0, torch.minimum(position_cost, w.position_clip), position_cost)
    orientation_cost = 2 * torch.acos((1 - s.orientation[:, 3].abs()).clamp(-1, 1))
    linear_velocity_cost = torch.linalg.vector_norm(s.linear_velocity, dim=-1)
    angular_velocity_cost = torch.linalg.vector_norm(s.angular_velocity, dim=-1)
    linear_acceleration_cost = torch.linalg.vector_norm(s_next.linear_velocity - s.linear_velocity, dim=-1) / dt
    angular_acceleration_cost = torch.linalg.vector_norm(s_next.angular_velocity - s.angular_velocity, dim=-1) / dt
    throttle = (actions + 1) / 2
    action_cost = (throttle - params.dynamics.hovering_throttle_relative[:, None]).square().sum(-1)
    d_action_cost = torch.linalg.vector_norm(actions - last_action, dim=-1)
    weighted_cost = (w.position * position_cost + w.orientation * orientation_cost
                     + w.linear_velocity * linear_velocity_cost + w.angular_velocity * angular_velocity_cost
                     + w.linear_acceleration * linear_acceleration_cost
                     + w.angular_acceleration * angular_acceleration_cost
                     + w.action * action_cost + w.d_action * d_action_cost)
    out = -w.scale * weighted_cost + w.constant
    return torch.where(w.non_negative, out.clamp(min=0), out)


def observation_groups(params: Params, target: torch.Tensor, state: State, action_history: torch.Tensor,
                       features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(noise-free policy observation, teacher observation) of `state` (layouts: `eyas.envs.point_control`)."""
    noise_free = policy_observation(state, action_history, target)
    return noise_free, torch.cat([noise_free, normalized_rotor_speeds(params, state), features], dim=-1)


def _take(done: torch.Tensor, pool_rows: torch.Tensor, current: TensorTree | torch.Tensor, pool: TensorTree | torch.Tensor):
    """``current`` with the finished rows (``done``) replaced by the pool entries ``pool_rows``."""
    if isinstance(current, TensorTree):
        leaves = [_take(done, pool_rows, c, p) for c, p in zip(current.leaves(), pool.leaves())]
        it = iter(leaves)
        return current.map(lambda _: next(it))
    mask = done.reshape(-1, *([1] * (current.dim() - 1)))
    return torch.where(mask, pool[pool_rows].to(current.dtype), current)


def transition(state: State, actions: torch.Tensor, applied: torch.Tensor, params: Params, target: torch.Tensor,
               last_action: torch.Tensor, action_history: torch.Tensor, length: torch.Tensor,
               episode_return: torch.Tensor, features: torch.Tensor, max_length: int,
               pool: ResetPool | None, pool_first: torch.Tensor) -> dict:
    """One env step for all rows: ``applied`` (actions after noise) drives the physics, ``actions`` enter the reward
    and the history. With a ``pool``, finished rows restart from it (entry ``pool_first`` on, in row order) and the
    returned state, parameters, buffers and observations are their new episode's; without one (fixed dynamics)
    they are the finished episode's last, for the env to reset eagerly."""
    next_state = sim.step(state, applied, params, validate=False)
    terms = termination_terms(params, target, next_state)
    terminated = torch.stack(list(terms.values())).any(0)
    rewards = torch.where(terminated, params.mdp.reward.termination_penalty,
                          reward(params, target, state, actions, last_action, next_state))
    length, episode_return = length + 1, episode_return + rewards
    time_outs = (length >= max_length) & ~terminated
    dones = terminated | time_outs
    count = dones.sum()
    share = lambda x: (x.to(rewards.dtype) * dones).sum() / count.clamp(min=1)  # noqa: E731  (mean over finished)
    log = {"/episode/return": share(episode_return), "/episode/length": share(length),
           "/episode/terminated": share(terminated)} | {f"/episode/termination/{k}": share(v) for k, v in terms.items()}
    out = {"rewards": rewards, "terminated": terminated, "time_outs": time_outs, "dones": dones, "count": count,
           "terms": terms, "log": log, "position_error": torch.linalg.vector_norm(next_state.position - target, dim=-1),
           "params": params, "features": features}
    history = torch.cat([actions[:, None], action_history[:, :-1]], dim=1)
    if pool is not None:
        rows = (pool_first + dones.cumsum(0) - 1).clamp(0, pool.batch_size - 1)
        next_state, out["params"] = _take(dones, rows, next_state, pool.state), _take(dones, rows, params, pool.params)
        out["features"] = _take(dones, rows, features, pool.features)
        start = pool.rotor_speeds[rows][:, None, :].expand(-1, history.shape[1], -1)
        history = torch.where(dones[:, None, None], start.to(history.dtype), history)
        keep = ~dones
        actions, length, episode_return = actions * keep[:, None], length * keep, episode_return * keep
    else:
        actions = actions.clone()  # the env resets rows of it in place; the caller's tensor stays as it was
    out |= {"state": next_state, "action_history": history, "last_action": actions, "length": length,
            "episode_return": episode_return}
    out["policy"], out["teacher"] = observation_groups(out["params"], target, next_state, history, out["features"])
    return out


_COMPILED: dict = {}


def compile_enabled(setting: bool | None) -> bool:
    """The config's choice, or (None) the environment variable EYAS_COMPILE (default on; 0/false/no: eager)."""
    if setting is not None:
        return bool(setting)
    return os.environ.get("EYAS_COMPILE", "1").strip().lower() not in ("0", "false", "no", "off", "")


def step_function(compiled: bool):
    """`transition`, compiled once per process when ``compiled`` (and torch.compile works here)."""
    return compiled_function(transition) if compiled else transition


def compiled_function(fn):
    """``fn`` under torch.compile (inductor, symbolic batch sizes), made once per process, with the kernel cache
    in ``TORCHINDUCTOR_CACHE_DIR`` (default ``~/.cache/eyas/inductor``) and a one-warning eager fallback."""
    if fn not in _COMPILED:
        _use_eyas_cache_dir()
        _COMPILED[fn] = _with_eager_fallback(fn, torch.compile(fn, dynamic=True))
    return _COMPILED[fn]


def _use_eyas_cache_dir() -> None:
    """Point inductor's cache at ~/.cache/eyas/inductor unless the user chose one. Importing tensordict already
    resolves (and writes to the environment) torch's default, /tmp/torchinductor_<user>, which a reboot clears;
    that value counts as not chosen."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if current is None or os.path.abspath(current) == os.path.abspath(default_cache_dir()):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path.home() / ".cache" / "eyas" / "inductor")


def _with_eager_fallback(eager, fn):
    state = {"fn": fn}

    def call(*args, **kwargs):
        try:
            return state["fn"](*args, **kwargs)
        except Exception as e:  # noqa: BLE001  (any compiler failure: missing C++ compiler, unsupported op, ...)
            if state["fn"] is eager:
                raise
            warnings.warn(f"eyas: torch.compile of {eager.__module__}.{eager.__name__} failed ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:200] if str(e) else ''}); running it eager (EYAS_COMPILE=0 "
                          f"silences this)", RuntimeWarning, stacklevel=2)
            state["fn"] = eager
            return eager(*args, **kwargs)

    return call
