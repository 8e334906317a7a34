"""Point control with the embedded l2f multirotor: fly to and hold a target at the origin (RAPTOR's task).

`PointControlEnv` is an rsl_rl (>= 3) `VecEnv` over `cfg.num_envs` multirotors integrated at 100 Hz by
`eyas.sim.step`. Episodes last `max_episode_length` = 500 steps (5 s) unless terminated. Each environment
has its own dynamics parameters: redrawn by RAPTOR's domain randomisation at every episode start
(`dynamics="randomized"`), one registry model for all (`dynamics="crazyflie"`, ...), or a given `Params`
batch (1 or `num_envs` sets). Defaults reproduce RAPTOR's MDP (rl-tools `src/foundation_policy`, l2f):

* initial state: l2f `sample_initial_state` with init_90_deg: 10 % start at rest at the target, otherwise
  position ~ U(+-0.5 m), random axis with angle ~ U(0, 1 rad), velocity ~ U(+-1 m/s), body rate ~ U(+-1 rad/s),
  rotor speeds ~ U(min, middle of the range); previous-action history filled with the initial rotor speeds
* termination: |p_i| > position_threshold (1 m for registry models; 20 x the rotor distance for randomised
  dynamics, as l2f's sampler sets it), |v_i| > 2 m/s or |omega_i| > 35 rad/s; non-finite states also terminate
* reward (l2f `Squared`, RAPTOR weights): 1.5 - (|p| + 0.1 * 2 acos(1 - |q_z|) + |a - a_prev|),
  computed on the pre-step state; -100 on termination
* observation noise / action noise: none (RAPTOR); configurable

Observation groups (`get_observations()` returns a `TensorDict` with batch size [num_envs]):

    "policy"  (18 + 4 H, RAPTOR's 22 for H = cfg.action_history_length = 1), with observation noise:
        [0:3]   position - target (world frame, FLU / z-up)
        [3:12]  rotation matrix body->world, row-major
        [12:15] linear velocity (world frame)
        [15:18] angular velocity (body frame)
        [18:18+4H] previous actions in [-1, 1], most recent first (motor order FR, BR, BL, FL)
    "teacher" (18 + 4 H + 4 + 48 = 74 for H = 1), privileged and noise-free; its first 26 entries are the
        observation of RAPTOR's pre-training teachers (l2f `RotorSpeeds` after the action history).
        Indices for H = 1 (add 4 (H - 1) from 22 on):
        [0:22]   the policy layout without noise
        [22:26]  rotor speeds, normalised to [-1, 1] over the action limits
        [26]     ln(mass / 1 kg)
        [27]     thrust-to-weight ratio at full action
        [28]     largest rotor distance from the centre of mass / 0.1 m
        [29:32]  log10 of the diagonal of J_inv [1 / (kg m^2)]
        [32:44]  thrust coefficients c_ij * max_rotor_speed^j / (m |g|), rotor-major (c0, c1, c2)
        [44:56]  rotor positions / largest rotor distance, rotor-major (x, y, z)
        [56:60]  rotor torque constants x 100
        [60:64]  rising motor time constants / 0.1 s
        [64:68]  falling motor time constants / 0.1 s
        [68:71]  disturbance force / (m |g|) (world frame)
        [71:74]  disturbance angular acceleration J_inv T / (100 rad/s^2) (body frame)

Width: `env.num_obs` (policy) and `env.num_teacher_obs` (teacher).

`step` returns `(obs, rewards, dones, extras)` with auto-reset: `obs` of finished environments belongs
to their next episode, whose start (parameters for randomised dynamics, initial state) every row holds drawn ahead;
the step runs compiled (`eyas.envs.transition`). Observations are (num_envs, n) views of row-packed buffers
(`eyas.sim.fused`, a new one every step): not contiguous; without observation noise the policy group views the
teacher group's first entries. The env reads the teacher group's dynamics features back in its next step: treat
observations as read-only (copy one before writing into it). `extras["time_outs"]` marks episodes cut by the time
limit, `extras["terminated"]` the others that ended, `extras["termination_terms"]` which conditions each terminated
one met (`position`, `linear_velocity_xy`, `linear_velocity_z`, `angular_velocity`, `non_finite`),
`extras["position_error"]` is |p - target| of the state reached by this step (before any reset), and `extras["log"]`
holds episode statistics for rsl_rl's logger (return, length, share terminated, share per termination condition).
"""
from __future__ import annotations

import dataclasses
import math

import gymnasium as gym
import torch
from rsl_rl.env import VecEnv
from tensordict import TensorDict

from eyas import sim
from eyas.sim import Params, State, fused
from eyas.sim.fused import PARAMS

from . import transition
from .config import (InitCfg, ObservationNoiseCfg, PointControlEnvCfg, RewardCfg, TerminationCfg,  # noqa: F401
                     env_dtype)
from .features import NUM_DYNAMICS_FEATURES, dynamics_features
from .transition import EpisodeStarts

NUM_ACTIONS = 4
RESERVOIR = 16384  # randomised episode starts drawn per batch, at least (a draw costs ~200 eager ops)


class PointControlEnv(VecEnv, gym.Env):
    """rsl_rl `VecEnv` for RAPTOR point control (see module docstring). Subclasses `gymnasium.Env` only so
    `gymnasium.make("Isaac-Quadcopter-Point-Ctrl-v0")` can build it; `step` follows rsl_rl's API."""

    metadata = {"render_modes": []}

    def __init__(self, cfg: PointControlEnvCfg | None = None, **overrides):
        cfg = dataclasses.replace(cfg or PointControlEnvCfg(), **overrides)
        if cfg.num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {cfg.num_envs}")
        if cfg.action_history_length < 1:
            raise ValueError(f"action_history_length must be >= 1, got {cfg.action_history_length}")
        self.cfg = cfg
        self.num_envs = cfg.num_envs
        self.num_actions = NUM_ACTIONS
        self.max_episode_length = cfg.max_episode_length
        self.device = torch.empty(0, device=cfg.device).device  # canonical, e.g. cuda -> cuda:0
        self.dtype = env_dtype(cfg.dtype)
        self.generator = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.num_obs = 18 + 4 * cfg.action_history_length
        self.num_teacher_obs = self.num_obs + 4 + NUM_DYNAMICS_FEATURES
        self.target = torch.zeros(3, device=self.device, dtype=self.dtype)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (self.num_envs, NUM_ACTIONS))
        self.observation_space = gym.spaces.Dict({
            "policy": gym.spaces.Box(-math.inf, math.inf, (self.num_envs, self.num_obs)),
            "teacher": gym.spaces.Box(-math.inf, math.inf, (self.num_envs, self.num_teacher_obs)),
        })

        if isinstance(cfg.dynamics, Params):
            given = cfg.dynamics.to(self.device, self.dtype)
            if given.batch_size not in (1, self.num_envs):
                raise ValueError(f"dynamics Params must have batch size 1 or num_envs={self.num_envs}, "
                                 f"got {given.batch_size}")
            given.validate()
            self._fixed_params = given.expand(self.num_envs)
        elif cfg.dynamics == "randomized":
            self._fixed_params = None
        elif cfg.dynamics in sim.MODEL_NAMES:
            self._fixed_params = sim.model_params(cfg.dynamics, self.dtype, self.device).expand(self.num_envs)
        else:
            raise ValueError(f"dynamics must be 'randomized', a registry model ({', '.join(sim.MODEL_NAMES)}) "
                             f"or a Params batch, got {cfg.dynamics!r}")

        self._nominal = sim.model_params("crazyflie", torch.float64, self.device)  # l2f's nominal model for DR
        n, kwargs = self.num_envs, {"device": self.device, "dtype": self.dtype}
        self._noisy_observations = any(dataclasses.asdict(cfg.observation_noise).values())
        self._batch = torch.Size([n])
        if self._fixed_params is not None:
            self._apply_mdp_cfg(self._fixed_params)
        # Everything per row lives packed, one contiguous (B,) row per quantity (`eyas.sim.fused`): what the
        # compiled step reads and writes. `state`, `params`, `action_history`, ... are (B, ...) views of them.
        self._P = PARAMS.pack(self._fixed_params if self._fixed_params is not None else self._new_params(n), self.dtype)
        self._X = torch.zeros(fused.STATE.size, n, **kwargs)
        self._params_view: Params | None = None
        self._H = torch.zeros(4 * cfg.action_history_length, n, **kwargs)  # previous actions, most recent first
        self._A = torch.zeros(NUM_ACTIONS, n, **kwargs)  # l2f StateLastAction (d_action reward)
        self._F = torch.zeros(NUM_DYNAMICS_FEATURES, n, **kwargs)  # the teacher's dynamics features (`step`)
        self._action_buffers: dict[torch.dtype, torch.Tensor] = {}  # `_checked`
        self.episode_length_buf = torch.zeros(n, dtype=torch.long, device=self.device)
        self.episode_return = torch.zeros(n, **kwargs)
        self._transition = transition.step_function(transition.compile_enabled(cfg.compile), self.device)
        self._start_all()

    # --- state and parameters: (B, ...) views of the packed rows ----------------------------------------
    @property
    def state(self) -> State:
        """Every row's multirotor state (writing into it changes the env)."""
        return fused.unpack_state(self._X)

    @state.setter
    def state(self, value: State) -> None:
        self._X = fused.pack_state(value, self.dtype).to(self.device)

    @property
    def params(self) -> Params:
        """Every row's dynamics and MDP parameters (booleans as copies, made again after the env changes
        parameters)."""
        if self._params_view is None:
            self._params_view = PARAMS.unpack(self._P)
        return self._params_view

    @property
    def action_history(self) -> torch.Tensor:
        """(num_envs, H, 4) previous actions, most recent first."""
        return self._H.T.reshape(self.num_envs, self.cfg.action_history_length, NUM_ACTIONS)

    @property
    def last_action(self) -> torch.Tensor:
        """(num_envs, 4) the previous action (zero at an episode start: l2f's d_action reward)."""
        return self._A.T

    @property
    def dynamics_features(self) -> torch.Tensor:
        """(num_envs, 48) the teacher's dynamics features of every row's episode (layout: module docstring)."""
        return self._F.T

    @property
    def packed_state(self) -> torch.Tensor:
        """(23, num_envs) the state rows (`eyas.sim.fused.STATE`), what `state` views."""
        return self._X

    @property
    def packed_params(self) -> torch.Tensor:
        """(145, num_envs) the parameter rows (`eyas.sim.fused.PARAMS`), what `params` views."""
        return self._P

    @property
    def packed_features(self) -> torch.Tensor:
        """(48, num_envs) the dynamics-feature rows, what `dynamics_features` views."""
        return self._F

    def _param_row(self, name: str) -> torch.Tensor:
        return fused.param_rows(self._P, name)

    # --- parameters -----------------------------------------------------------------------------------
    def _new_params(self, count: int) -> Params:
        params = sim.sample_domain_randomized_params(count, self.generator, self.cfg.domain_randomization,
                                                     nominal=self._nominal, dtype=self.dtype, device=self.device,
                                                     validate=False)
        self._apply_mdp_cfg(params)
        return params

    def _apply_mdp_cfg(self, params: Params) -> None:
        """Write the configured MDP values (init, termination, reward, noise) into `params` in place."""
        mdp = params.mdp

        def put(tree, name, value):
            if value is not None:
                old = getattr(tree, name)
                setattr(tree, name, torch.full_like(old, value))

        for name, value in dataclasses.asdict(self.cfg.init).items():
            put(mdp.init, name, value)
        for name, value in dataclasses.asdict(self.cfg.termination).items():
            put(mdp.termination, name, value)
        for name, value in dataclasses.asdict(self.cfg.reward).items():
            put(mdp.reward, name, value)
        for name, value in dataclasses.asdict(self.cfg.observation_noise).items():
            put(mdp.observation_noise, name, value)
        put(mdp.action_noise, "normalized_rpm", self.cfg.action_noise)

    # --- episode starts -------------------------------------------------------------------------------
    def _draw_starts(self, params: Params, P: torch.Tensor | None = None) -> EpisodeStarts:
        """Starts for episodes with these parameters (``P``: them packed, when the caller holds them so): initial
        states drawn from the env's generator; the parameters themselves are kept for randomised dynamics only
        (fixed ones stay in their rows)."""
        state = sim.sample_initial_state(params, self.generator)
        starts = EpisodeStarts.empty(params.batch_size, self._fixed_params is None, self.dtype, self.device)
        X = fused.pack_state(state, self.dtype, out=starts.X)
        if P is None:
            P = PARAMS.pack(params, self.dtype, out=starts.P)
        elif starts.has_params:
            starts.P.copy_(P)
        torch.stack(transition.normalized_rotor_speeds(tuple(X.unbind(0)), P), out=starts.rotor_speeds)
        starts.features.copy_(dynamics_features(params, state).T)
        return starts

    def _begin(self, rows: torch.Tensor | slice, starts: EpisodeStarts) -> None:
        """Start new episodes in ``rows`` from ``starts`` (one column each)."""
        self._X[:, rows] = starts.X
        if starts.P is not None:
            self._P[:, rows] = starts.P
            self._params_view = None
        self._F = self._F.clone()  # it views the last teacher observation handed out (`step`): not written into
        self._F[:, rows] = starts.features
        self._H[:, rows] = starts.rotor_speeds.repeat(self.cfg.action_history_length, 1)
        self._A[:, rows] = 0
        self.episode_length_buf[rows] = 0
        self.episode_return[rows] = 0

    def _take_starts(self, count: int) -> EpisodeStarts:
        """The next ``count`` starts: new draws on every row's own parameters (fixed dynamics; ``count`` =
        num_envs), or the next unused ones of a reservoir of randomised starts drawn in batches."""
        if self._fixed_params is not None:
            return self._draw_starts(PARAMS.unpack(self._P), self._P)
        if self._reservoir is None or self._reservoir_used + count > len(self._reservoir):
            rest = None if self._reservoir is None else self._reservoir.columns(slice(self._reservoir_used, None))
            self._reservoir = self._draw_starts(self._new_params(max(4 * self.num_envs, RESERVOIR)))
            self._reservoir_used = 0
            if rest is not None and len(rest):  # the old reservoir's last starts first, then the new one's
                self._reservoir_used = count - len(rest)
                return rest.cat(self._reservoir.columns(slice(0, self._reservoir_used)))
        taken = self._reservoir.columns(slice(self._reservoir_used, self._reservoir_used + count))
        self._reservoir_used += count
        return taken

    def _start_all(self) -> None:
        """New episodes in every row, and the start of every row's episode after that, drawn ahead."""
        self._reservoir, self._reservoir_used = None, 0
        self._begin(slice(None), self._take_starts(self.num_envs))
        self._next = self._take_starts(self.num_envs)
        self._next.data = self._next.data.contiguous()
        self._mark_batch_dims()

    def _mark_batch_dims(self) -> None:
        """The batch dimension of what the next step reads: symbolic if that step compiles (`step_function`)."""
        if self._transition is not transition.transition:
            transition.mark_batch_dims(1, self._X, self._P, self._A, self._H, self._F, self._next.data)
            transition.mark_batch_dims(0, self.episode_length_buf, self.episode_return, *self._action_buffers.values())

    def _renew_next(self, rows: torch.Tensor) -> None:
        """``rows`` just began the episode their next start held: draw ahead their next one."""
        if self._fixed_params is not None:
            P = self._P[:, rows]
            fresh = self._draw_starts(PARAMS.unpack(P), P)
        else:
            fresh = self._take_starts(len(rows))
        self._next.data.index_copy_(1, rows, fresh.data)

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[TensorDict, dict]:
        """Start new episodes in all environments (optionally reseeding the generator first)."""
        if seed is not None:
            self.generator.manual_seed(seed)
        self._start_all()
        return self.get_observations(), {}

    # --- observations ---------------------------------------------------------------------------------
    def observation_noise(self) -> torch.Tensor | None:
        """One draw of the policy observation's noise (num_envs, num_obs) from the env's generator, None when off."""
        if not self._noisy_observations:
            return None
        std = [self._param_row(f"mdp.observation_noise.{name}")[:, None].expand(-1, n)
               for name, n in (("position", 3), ("orientation", 9), ("linear_velocity", 3), ("angular_velocity", 3))]
        scale = torch.cat(std, -1)
        noise = scale * torch.randn(scale.shape, generator=self.generator, device=self.device, dtype=self.dtype)
        return torch.nn.functional.pad(noise, (0, self.num_obs - 18))

    def get_observations(self) -> TensorDict:
        return self._observations(*transition.observation_rows(self._X, self._P, self._H, self._F, self.target))

    def _observations(self, noise_free: torch.Tensor, teacher: torch.Tensor) -> TensorDict:
        """The observation groups from their rows (num_obs, B) and (num_teacher_obs, B): (B, ...) views."""
        noise = self.observation_noise()
        policy = noise_free.T if noise is None else noise_free.T + noise
        return TensorDict._new_unsafe({"policy": policy, "teacher": teacher.T}, batch_size=self._batch,
                                      device=self.device)

    # --- step -----------------------------------------------------------------------------------------
    def step(self, actions: torch.Tensor) -> tuple[TensorDict, torch.Tensor, torch.Tensor, dict]:
        """Apply `actions` (num_envs, 4) in [-1, 1] (finite values outside are clamped, as in l2f): the compiled (or
        eager) `transition`, then what needs random draws or host values (noise, the next episode starts)."""
        actions = self._checked(actions)
        noise = None
        if self.cfg.action_noise > 0:
            noise = self._param_row("mdp.action_noise.normalized_rpm")[:, None] * torch.randn(
                actions.shape, generator=self.generator, device=self.device, dtype=self.dtype)
        nxt = self._next
        out = self._transition(self._X, self._P, actions, noise, self._A, self._H, self.episode_length_buf,
                               self.episode_return, self._F, self.target, self.max_episode_length, nxt.data)
        count, nan, inf = out["checks"].tolist()  # one host sync: the action checks and the bookkeeping below
        if self.cfg.validate_actions and (nan or inf):  # nothing has changed yet
            raise ValueError("actions contain NaN" if nan else
                             "actions contain inf; actions must be finite (finite values outside [-1, 1] are clamped)")
        extras = {"time_outs": out["time_outs"], "terminated": out["terminated"],
                  "position_error": out["position_error"],
                  "termination_terms": dict(zip(transition.TERMS, out["terms"].unbind(0)))}
        self._X, self._H, self._A = out["X"], out["history"], out["last_action"]
        self.episode_length_buf, self.episode_return = out["length"], out["episode_return"]
        if count:  # the finished rows began their next episode in the step: its parameters, and the one after
            extras["log"] = dict(zip(transition.LOG_KEYS, out["log"].unbind(0)))
            rows = out["dones"].nonzero()[:, 0]
            if nxt.has_params:
                self._P.index_copy_(1, rows, nxt.P.index_select(1, rows))
                self._params_view = None
            self._renew_next(rows)
        teacher = out["teacher"]
        # every row's features as the step wrote them into the teacher observation (the finished rows' new ones):
        # a view, not a copy of the finished columns (at 4,096 envs that copy cost ~8 % of a step)
        self._F = teacher[self.num_obs + 4:]
        return self._observations(teacher[:self.num_obs], teacher), out["rewards"], out["dones"].long(), extras

    def _checked(self, actions: torch.Tensor) -> torch.Tensor:
        """``actions`` on the env's device, after the checks that need no host read (NaN and inf: in the step)."""
        if not isinstance(actions, torch.Tensor):
            raise ValueError(f"actions must be a torch.Tensor of shape ({self.num_envs}, 4), got {type(actions).__name__}")
        if tuple(actions.shape) != (self.num_envs, NUM_ACTIONS):
            raise ValueError(f"actions must have shape ({self.num_envs}, {NUM_ACTIONS}) (num_envs, rotors), "
                             f"got {tuple(actions.shape)}")
        if not actions.is_floating_point():
            raise ValueError(f"actions must be a floating-point tensor, got {actions.dtype}")
        # copied into a buffer of the env's: one storage offset and stride for every call (dynamo specialises a
        # compiled step on them: a slice of a pre-drawn action tensor would cost a recompile mid-run)
        staged = self._action_buffers.get(actions.dtype)
        if staged is None:
            staged = self._action_buffers[actions.dtype] = torch.empty(self.num_envs, NUM_ACTIONS, dtype=actions.dtype,
                                                                       device=self.device)
            self._mark_batch_dims()
        return staged.copy_(actions.detach())

    def termination_terms(self, s: State) -> dict[str, torch.Tensor]:
        """(N,) bool per termination condition of state `s` under this env's parameters (`transition`)."""
        rows = transition.termination_rows(tuple(fused.pack_state(s, self.dtype).unbind(0)), self._P, self.target)
        return dict(zip(transition.TERMS, rows))

    # --- resume (`eyas teacher train --resume`) -------------------------------------------------------
    def state_dict(self) -> dict:
        """What `step`/`reset` read that changes in flight: random stream, dynamics, states, episode buffers and the
        episode starts drawn ahead."""
        reservoir = None if self._reservoir is None else self._reservoir.columns(slice(self._reservoir_used, None))
        return {"generator": self.generator.get_state(), "packed_params": self._P.clone(),
                "packed_state": self._X.clone(), "next_starts": _starts_list(self._next),
                "reservoir": _starts_list(reservoir)} | {k: getattr(self, k).clone() for k in (*_BUFFERS, *_PACKED)}

    def load_state_dict(self, saved: dict) -> None:
        """Continue from `state_dict()` of an env built with the same config. A state saved before the packed
        layout continues with new draws for the episodes after the current ones."""
        if "packed_params" not in saved:
            saved = _packed_state_dict(saved)
        for name, value in (("_P", saved["packed_params"]), ("_X", saved["packed_state"])):
            if getattr(self, name).shape != value.shape:
                raise ValueError("saved env state does not fit this env (other num_envs or config)")
            setattr(self, name, value.to(self.device, self.dtype).clone())
        self._params_view = None
        for k in _BUFFERS:
            getattr(self, k).copy_(saved[k])
        for k, packed in _PACKED.items():  # new tensors: the features may view an observation handed out
            setattr(self, packed, saved[k].reshape(self.num_envs, -1).T.to(self.device, self.dtype).contiguous())
        self.generator.set_state(saved["generator"])
        self._reservoir, self._reservoir_used = _starts(saved.get("reservoir"), self.device), 0
        self._next = _starts(saved.get("next_starts"), self.device) or self._take_starts(self.num_envs)
        self._mark_batch_dims()

    def close(self) -> None:
        pass


_BUFFERS = ("episode_length_buf", "episode_return")  # saved as they are; the packed buffers below as rows
_PACKED = {"action_history": "_H", "last_action": "_A", "dynamics_features": "_F"}  # saved batch-first


def _starts_list(starts: EpisodeStarts | None) -> list | None:
    return None if starts is None else [starts.data.clone(), starts.has_params]


def _starts(saved: list | None, device) -> EpisodeStarts | None:
    return None if saved is None else EpisodeStarts(saved[0].to(device).clone(), bool(saved[1]))


def _packed_state_dict(saved: dict) -> dict:
    """A `state_dict` written before the packed layout (the leaves of `Params` and `State`) in today's form."""
    def tree(example, leaves):
        it = iter(leaves)
        return example.map(lambda _: next(it))

    n = len(PARAMS.leaves)
    out = dict(saved, packed_params=PARAMS.pack(tree(PARAMS.example, saved["params"])),
               packed_state=fused.pack_state(tree(fused.STATE.example, saved["state"])),
               dynamics_features=saved["_dynamics_features"], reservoir=None, next_starts=None)
    if saved.get("pool") is not None:
        leaves = saved["pool"]
        out["reservoir"] = _starts_list(EpisodeStarts.of(
            fused.pack_state(tree(fused.STATE.example, leaves[n:n + 7])), PARAMS.pack(tree(PARAMS.example, leaves[:n])),
            *(t.T for t in leaves[n + 7:])))
    return out


def make_env(cfg: PointControlEnvCfg | None = None, **overrides) -> PointControlEnv:
    """gymnasium entry point of `Isaac-Quadcopter-Point-Ctrl-v0`: `gym.make(id, cfg=..., num_envs=..., ...)`."""
    overrides.pop("render_mode", None)
    return PointControlEnv(cfg, **overrides)
