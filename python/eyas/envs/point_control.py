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
    "teacher" (18 + 4 H + 4 + 48 = 74 for H = 1), noise-free; its first 26 entries are the
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

    "privileged" (with ``cfg.privileged``): the teacher group and 16 task rows (`eyas.envs.step.observe`):
        [74:77]  the reference's acceleration (world frame)
        [77:81]  each rotor's share of its thrust curve (a weak motor)
        [81]     the actuation delay in steps
        [82:90]  the two commands issued before the last one, most recent first

Width: `env.num_obs` (policy), `env.num_teacher_obs` (teacher), `env.num_privileged_obs`.
With a moving reference (`ScenarioCfg`, `cfg.scenario`) position and velocity are relative to it.

`step` returns `(obs, rewards, dones, extras)` with auto-reset: `obs` of finished environments belongs
to their next episode, whose start (parameters for randomised dynamics, task, initial state) every row holds drawn
ahead; the step is `eyas.envs.step.env_step`, compiled. Observations are (num_envs, n) views of a new row-packed
buffer every step (`eyas.sim.fused`): not contiguous; without observation noise the policy group views the teacher
group's first entries. `extras["time_outs"]` marks episodes cut by the time limit, `extras["terminated"]` the others
that ended, `extras["termination_terms"]` which conditions each terminated one met (`position`,
`linear_velocity_xy`, `linear_velocity_z`, `angular_velocity`, `non_finite`), `extras["position_error"]` is
|p - p_ref| of the state reached by this step (before any reset), and `extras["log"]` holds episode statistics for
rsl_rl's logger (return, length, share terminated, share per termination condition).
"""
from __future__ import annotations

import dataclasses
import math

import gymnasium as gym
import torch
from rsl_rl.env import VecEnv
from tensordict import TensorDict

from eyas import sim
from eyas.compilation import compile_enabled, compiled_function, mark_batch_dims
from eyas.sim import Params, State, fused
from eyas.sim.fused import PARAMS

from .config import (InitCfg, ObservationNoiseCfg, PointControlEnvCfg, RewardCfg, TerminationCfg,  # noqa: F401
                     env_dtype)
from .features import NUM_DYNAMICS_FEATURES
from .scenario import TASK, ScenarioCfg, reference_rows  # noqa: F401
from .starts import StartSource, apply_mdp_cfg
from .step import LOG_KEYS, TASK_OBSERVATION, TERMS, EnvState, EpisodeStarts, Settings, env_step, errors, observe, \
    termination_rows

NUM_ACTIONS = 4
NOISE_SEED = 0x5EED  # the noise's own generator (seed + this): observation and action noise draws do not depend on resets


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
        cfg.scenario.validate()
        self.cfg, self.num_envs, self.num_actions = cfg, cfg.num_envs, NUM_ACTIONS
        self.max_episode_length = cfg.max_episode_length
        self.device = torch.empty(0, device=cfg.device).device  # canonical, e.g. cuda -> cuda:0
        self.dtype = env_dtype(cfg.dtype)
        self.generator = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.noise_generator = torch.Generator(device=self.device).manual_seed(cfg.seed + NOISE_SEED)
        sc = cfg.scenario
        self.settings = Settings(sc.moving, sc.observation_clip, sc.delay_slots, sc.gusts, sc.weak_motors,
                                 cfg.privileged)
        self._max_length = torch.tensor(cfg.max_episode_length, device=self.device)
        self.num_obs = 18 + 4 * cfg.action_history_length
        self.num_teacher_obs = self.num_obs + 4 + NUM_DYNAMICS_FEATURES
        self.num_privileged_obs = self.num_teacher_obs + TASK_OBSERVATION
        self.action_space = gym.spaces.Box(-1.0, 1.0, (self.num_envs, NUM_ACTIONS))
        groups = {"policy": self.num_obs, "teacher": self.num_teacher_obs}
        groups |= {"privileged": self.num_privileged_obs} if cfg.privileged else {}
        self.observation_space = gym.spaces.Dict({k: gym.spaces.Box(-math.inf, math.inf, (self.num_envs, n))
                                                  for k, n in groups.items()})
        self._fixed_params = self._fixed_dynamics(cfg.dynamics)
        self._starts = StartSource(cfg, self._fixed_params, self.generator, self.device, self.settings.weak_motors)
        n, kwargs = self.num_envs, {"device": self.device, "dtype": self.dtype}
        self._noisy_observations = any(dataclasses.asdict(cfg.observation_noise).values())
        self._batch = torch.Size([n])
        # Everything per row lives packed, one contiguous (B,) row per quantity (`eyas.envs.step.EnvState`); P and T
        # are views of one tensor, in `EpisodeStarts`' order: finished rows take both in one copy (`step`)
        self._PT = torch.zeros(PARAMS.size + TASK.SIZE, n, **kwargs)
        self._P, self._T = self._PT[:PARAMS.size], self._PT[PARAMS.size:]
        PARAMS.pack(self._fixed_params if self._fixed_params is not None else self._starts.new_params(n), self.dtype,
                    out=self._P)
        # the rows of P and T finished rows take from their starts: not fixed parameters, nor all-hovering tasks
        low, high = (0 if self._fixed_params is None else PARAMS.size), PARAMS.size + TASK.SIZE * sc.active
        first = EpisodeStarts.layout(low == 0)["P" if low == 0 else "T"].start
        self._taken = (self._PT[low:high], slice(first, first + high - low)) if high > low else None
        self._F = torch.zeros(NUM_DYNAMICS_FEATURES, n, **kwargs)
        self._X = torch.zeros(fused.STATE.size, n, **kwargs)
        self._H = torch.zeros(4 * cfg.action_history_length, n, **kwargs)  # previous actions, most recent first
        self._C = (torch.zeros(4 * self.settings.delay_slots, n, **kwargs)  # commands in the actuation delay
                   if self.settings.delay_slots else None)
        self._A = torch.zeros(NUM_ACTIONS, n, **kwargs)  # l2f StateLastAction (d_action reward)
        self._params_view: Params | None = None
        self._action_buffers: dict[torch.dtype, torch.Tensor] = {}  # `_checked`
        self.episode_length_buf = torch.zeros(n, dtype=torch.long, device=self.device)
        self.episode_return = torch.zeros(n, **kwargs)
        compiled = compile_enabled(cfg.compile)
        self._step = compiled_function(env_step, device=self.device, dynamic=None) if compiled else env_step
        self._compiled = compiled
        self._start_all()

    def _fixed_dynamics(self, dynamics) -> Params | None:
        """The rows' fixed parameters (with the configured MDP), or None for randomised dynamics."""
        if isinstance(dynamics, Params):
            given = dynamics.to(self.device, self.dtype)
            if given.batch_size not in (1, self.num_envs):
                raise ValueError(f"dynamics Params must have batch size 1 or num_envs={self.num_envs}, "
                                 f"got {given.batch_size}")
            given.validate()
            fixed = given.expand(self.num_envs)
        elif dynamics == "randomized":
            return None
        elif dynamics in sim.MODEL_NAMES:
            fixed = sim.model_params(dynamics, self.dtype, self.device).expand(self.num_envs)
        else:
            raise ValueError(f"dynamics must be 'randomized', a registry model ({', '.join(sim.MODEL_NAMES)}) "
                             f"or a Params batch, got {dynamics!r}")
        apply_mdp_cfg(self.cfg, fixed)
        return fixed

    # --- state and parameters: (B, ...) views of the packed rows ----------------------------------------
    def env_state(self) -> EnvState:
        """Every row's episode as `eyas.envs.step.EnvState` (views of the env's tensors)."""
        return EnvState(self._X, self._P, self._T, self._F, self._H, self._C, self._A, self.episode_length_buf,
                        self.episode_return)

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
    def task(self) -> torch.Tensor:
        """(num_envs, TASK.SIZE) every row's task (`eyas.envs.scenario.TASK`)."""
        return self._T.T

    def reference(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(position, velocity) of every row's reference now, (num_envs, 3) each (zero when hovering)."""
        p, v, _ = reference_rows(self._T, self.episode_length_buf, self._P)
        return torch.stack(p, -1), torch.stack(v, -1)

    @property
    def relative_position(self) -> torch.Tensor:
        """(num_envs, 3) position relative to the reference now."""
        return self.state.position - self.reference()[0]

    def _param_row(self, name: str) -> torch.Tensor:
        return fused.param_rows(self._P, name)

    # --- parameters -----------------------------------------------------------------------------------
    # --- episode starts -------------------------------------------------------------------------------
    def _begin(self, rows: torch.Tensor | slice, starts: EpisodeStarts) -> None:
        """Start new episodes in ``rows`` from ``starts`` (one column each)."""
        self._X[:, rows] = starts.X
        if starts.has_params:
            self._P[:, rows] = starts.P
            self._params_view = None
        self._T[:, rows] = starts.T
        self._F = self._F.clone()  # it may view the last teacher observation handed out (`step`): not written into
        self._F[:, rows] = starts.features
        fill = starts.rotor_speeds
        self._H[:, rows] = fill.repeat(self.cfg.action_history_length, 1)
        if self._C is not None:
            self._C[:, rows] = fill.repeat(self.settings.delay_slots, 1)
        self._A[:, rows] = 0
        self.episode_length_buf[rows] = 0
        self.episode_return[rows] = 0

    def _start_all(self) -> None:
        """New episodes in every row, and the start of every row's episode after that, drawn ahead."""
        self._starts.reservoir, self._starts.used = None, 0
        self._begin(slice(None), self._starts.take(self.num_envs, self._P))
        self._next = self._starts.take(self.num_envs, self._P)
        self._next.data = self._next.data.contiguous()
        self._mark_batch_dims()

    def _mark_batch_dims(self) -> None:
        """The batch dimension of what the next step reads: symbolic if that step compiles."""
        if self._compiled:
            mark_batch_dims(1, self._X, self._P, self._T, self._F, self._H, self._A, self._next.data,
                            *([] if self._C is None else [self._C]))
            mark_batch_dims(0, self.episode_length_buf, self.episode_return, *self._action_buffers.values())

    def _renew_next(self, rows: torch.Tensor) -> None:
        """``rows`` just began the episode their next start held: draw ahead their next one."""
        fresh = self._starts.take(len(rows), self._P[:, rows] if self._fixed_params is not None else None)
        self._next.data.index_copy_(1, rows, fresh.data)

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[TensorDict, dict]:
        """Start new episodes in all environments (optionally reseeding the generators first)."""
        if seed is not None:
            self.generator.manual_seed(seed)
            self.noise_generator.manual_seed(seed + NOISE_SEED)
        self._start_all()
        return self.get_observations(), {}

    # --- observations ---------------------------------------------------------------------------------
    def observation_noise(self) -> torch.Tensor | None:
        """One draw of the policy observation's noise (num_envs, num_obs) from the env's noise generator (the same
        draws whatever the episodes do), None when off."""
        if not self._noisy_observations:
            return None
        std = [self._param_row(f"mdp.observation_noise.{name}")[:, None].expand(-1, n)
               for name, n in (("position", 3), ("orientation", 9), ("linear_velocity", 3), ("angular_velocity", 3))]
        scale = torch.cat(std, -1) * self._T[TASK.NOISE_SCALE][:, None]
        noise = scale * torch.randn(scale.shape, generator=self.noise_generator, device=self.device, dtype=self.dtype)
        return torch.nn.functional.pad(noise, (0, self.num_obs - 18))

    def get_observations(self) -> TensorDict:
        return self._observations(observe(self.env_state(), self.settings)[1])

    def _observations(self, teacher: torch.Tensor) -> TensorDict:
        """The observation groups from the teacher rows (num_privileged_obs or num_teacher_obs, B): (B, ...) views."""
        noise = self.observation_noise()
        policy = teacher[:self.num_obs].T if noise is None else teacher[:self.num_obs].T + noise
        groups = ({"policy": policy, "teacher": teacher[:self.num_teacher_obs].T, "privileged": teacher.T}
                  if self.cfg.privileged else {"policy": policy, "teacher": teacher.T})
        return TensorDict._new_unsafe(groups, batch_size=self._batch, device=self.device)

    # --- step -----------------------------------------------------------------------------------------
    def step(self, actions: torch.Tensor) -> tuple[TensorDict, torch.Tensor, torch.Tensor, dict]:
        """Apply `actions` (num_envs, 4) in [-1, 1] (finite values outside are clamped, as in l2f): the compiled (or
        eager) `env_step`, then what needs random draws or host values (noise, the next episode starts)."""
        actions = self._checked(actions)
        noise = None
        if self.cfg.action_noise > 0:
            noise = self._param_row("mdp.action_noise.normalized_rpm")[:, None] * torch.randn(
                actions.shape, generator=self.noise_generator, device=self.device, dtype=self.dtype)
        nxt = self._next
        out = self._step(self.env_state(), actions, noise, nxt.data, self._max_length, self.settings, nxt.has_params)
        count, nan, inf = out["checks"].tolist()  # one host sync: the action checks and the bookkeeping below
        if self.cfg.validate_actions and (nan or inf):  # nothing has changed yet
            raise ValueError("actions contain NaN" if nan else
                             "actions contain inf; actions must be finite (finite values outside [-1, 1] are clamped)")
        extras = {"time_outs": out["time_outs"], "terminated": out["terminated"],
                  "position_error": out["position_error"], "termination_terms": dict(zip(TERMS, out["terms"].unbind(0)))}
        self._X, self._H, self._C, self._A = out["X"], out["H"], out["C"], out["A"]
        self.episode_length_buf, self.episode_return = out["length"], out["ret"]
        # every row's features as the step wrote them into the teacher rows (the finished rows' new ones; with gusts
        # those rows differ, and the step returns F): a view, not a copy of the finished columns
        self._F = out["F"] if self.settings.gusts else out["teacher"][self.num_obs + 4:self.num_teacher_obs]
        if count:  # the finished rows began their next episode in the step: its constants, and the one after
            extras["log"] = dict(zip(LOG_KEYS, out["log"].unbind(0)))
            rows = out["dones"].nonzero()[:, 0]
            if self._taken is not None:
                own, block = self._taken
                own.index_copy_(1, rows, nxt.data[block].index_select(1, rows))
            self._params_view = None
            self._renew_next(rows)
        return self._observations(out["teacher"]), out["rewards"], out["dones"].long(), extras

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
        """(N,) bool per termination condition of state `s` under this env's parameters, relative to every row's
        reference now."""
        x = tuple(fused.pack_state(s, self.dtype).unbind(0))
        position, velocity, _ = errors(x, self.env_state(), self.episode_length_buf, self.settings.moving)
        return dict(zip(TERMS, termination_rows(x, self._P, position, velocity)))

    # --- resume (`eyas teacher train --resume`) -------------------------------------------------------
    def state_dict(self) -> dict:
        """What `step`/`reset` read that changes in flight: random streams, episode constants, states, episode
        buffers and the episode starts drawn ahead."""
        return {"generator": self.generator.get_state(), "noise_generator": self.noise_generator.get_state(),
                "next_starts": _starts_list(self._next), "reservoir": _starts_list(self._starts.left())} | {
            k: getattr(self, k).clone() for k in _SAVED if getattr(self, k) is not None}

    def load_state_dict(self, saved: dict) -> None:
        """Continue from `state_dict()` of an env built with the same config."""
        if "_T" not in saved:
            raise ValueError("saved env state is from an earlier eyas layout; start a new run")
        for name in (k for k in _SAVED if getattr(self, k) is not None):
            value = saved[name]
            if getattr(self, name).shape != value.shape:
                raise ValueError("saved env state does not fit this env (other num_envs or config)")
            if name in ("_P", "_T"):  # views of one tensor
                getattr(self, name).copy_(value)
            else:
                setattr(self, name, value.to(self.device, getattr(self, name).dtype).clone())
        self._params_view = None
        self.generator.set_state(saved["generator"])
        self.noise_generator.set_state(saved["noise_generator"])
        self._starts.reservoir, self._starts.used = _starts(saved.get("reservoir"), self.device), 0
        self._next = _starts(saved.get("next_starts"), self.device) or self._starts.take(self.num_envs, self._P)
        self._mark_batch_dims()

    def close(self) -> None:
        pass


_SAVED = ("_P", "_T", "_F", "_X", "_H", "_C", "_A", "episode_length_buf", "episode_return")


def _starts_list(starts: EpisodeStarts | None) -> list | None:
    return None if starts is None else [starts.data.clone(), starts.has_params]


def _starts(saved: list | None, device) -> EpisodeStarts | None:
    return None if saved is None else EpisodeStarts(saved[0].to(device).clone(), bool(saved[1]))


def make_env(cfg: PointControlEnvCfg | None = None, **overrides) -> PointControlEnv:
    """gymnasium entry point of `Isaac-Quadcopter-Point-Ctrl-v0`: `gym.make(id, cfg=..., num_envs=..., ...)`."""
    overrides.pop("render_mode", None)
    return PointControlEnv(cfg, **overrides)
