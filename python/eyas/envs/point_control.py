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
to their next episode (randomised dynamics: drawn ahead in a pool; the step runs compiled, `eyas.envs.transition`). `extras["time_outs"]` marks episodes cut by the time limit, `extras["terminated"]`
the others that ended, `extras["termination_terms"]` which conditions each terminated one met (`position`,
`linear_velocity_xy`, `linear_velocity_z`, `angular_velocity`, `non_finite`), `extras["position_error"]` is
|p - target| of the state reached by this step (before any reset), and `extras["log"]` holds episode statistics
for rsl_rl's logger (return, length, share terminated, share per termination condition).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import gymnasium as gym
import torch
from rsl_rl.env import VecEnv
from tensordict import TensorDict

from eyas import sim
from eyas.sim import Params, State

from . import transition
from .transition import ResetPool

NUM_ACTIONS = 4
NUM_DYNAMICS_FEATURES = 48


@dataclass
class InitCfg:
    """Initial-state distribution (l2f `Initialization`); None keeps each parameter set's own value."""

    guidance: float | None = 0.1
    max_position: float | None = 0.5
    max_angle: float | None = math.pi / 2  # > 0 enables random orientations (angle ~ U(0, 1 rad), as l2f)
    max_linear_velocity: float | None = 1.0
    max_angular_velocity: float | None = 1.0
    relative_rpm: bool | None = True
    min_rpm: float | None = -1.0
    max_rpm: float | None = 0.0


@dataclass
class TerminationCfg:
    """Termination thresholds (l2f `Termination`); None keeps each parameter set's own value
    (position: 1 m for registry models, 20 x the largest rotor distance for randomised dynamics)."""

    enabled: bool | None = True
    position_threshold: float | None = None
    linear_velocity_threshold: float | None = 2.0
    angular_velocity_threshold: float | None = 35.0


@dataclass
class RewardCfg:
    """Reward weights (l2f `Squared`; RAPTOR's values)."""

    non_negative: bool = False
    scale: float = 1.0
    constant: float = 1.5
    termination_penalty: float = -100.0
    position: float = 1.0
    position_clip: float = 0.0
    orientation: float = 0.1
    linear_velocity: float = 0.0
    angular_velocity: float = 0.0
    linear_acceleration: float = 0.0
    angular_acceleration: float = 0.0
    action: float = 0.0
    d_action: float = 1.0


@dataclass
class ObservationNoiseCfg:
    """Standard deviations of additive Gaussian noise on the policy observation (l2f `ObservationNoise`)."""

    position: float = 0.0
    orientation: float = 0.0  # added to each rotation-matrix entry
    linear_velocity: float = 0.0
    angular_velocity: float = 0.0


@dataclass
class PointControlEnvCfg:
    num_envs: int = 4096
    device: str = "cpu"
    dtype: str = "float32"
    seed: int = 0
    max_episode_length: int = 500
    dynamics: str | Params = "randomized"  # "randomized", a registry model name, or a Params batch
    domain_randomization: sim.DomainRandomizationRanges = field(default_factory=sim.DomainRandomizationRanges)
    init: InitCfg = field(default_factory=InitCfg)
    termination: TerminationCfg = field(default_factory=TerminationCfg)
    reward: RewardCfg = field(default_factory=RewardCfg)
    observation_noise: ObservationNoiseCfg = field(default_factory=ObservationNoiseCfg)
    action_noise: float = 0.0  # std of Gaussian noise added to actions before clamping (l2f normalized_rpm)
    action_history_length: int = 1
    validate_actions: bool = True  # raise ValueError on NaN/inf actions (one host sync per step)
    compile: bool | None = None  # the step compiled by torch.compile (None: EYAS_COMPILE, default on; `transition`)

    def to_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value) and not isinstance(value, Params):
                value = dataclasses.asdict(value)
            elif isinstance(value, Params):
                value = f"Params(batch_size={value.batch_size})"
            out[f.name] = value
        return out


def _dtype(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    if name not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {name!r}")
    return getattr(torch, name)


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
        self.dtype = _dtype(cfg.dtype)
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
        self.params: Params = self._new_params(n) if self._fixed_params is None else self._fixed_params.clone()
        self._apply_mdp_cfg(self.params)
        self.state: State = sim.sample_initial_state(self.params, self.generator)
        self.action_history = torch.zeros(n, cfg.action_history_length, NUM_ACTIONS, **kwargs)
        self.last_action = torch.zeros(n, NUM_ACTIONS, **kwargs)  # l2f StateLastAction (d_action reward)
        self.episode_length_buf = torch.zeros(n, dtype=torch.long, device=self.device)
        self.episode_return = torch.zeros(n, **kwargs)
        self._dynamics_features = torch.zeros(n, NUM_DYNAMICS_FEATURES, **kwargs)
        self._reset_idx(torch.arange(n, device=self.device), resample_state=False)
        self._transition = transition.step_function(transition.compile_enabled(cfg.compile))
        self._pool: ResetPool | None = None  # randomised dynamics: episode starts drawn ahead (`_fill_pool`)
        self._pool_used, self._pool_first = 0, torch.zeros((), dtype=torch.long, device=self.device)

    # --- parameters -----------------------------------------------------------------------------------
    def _new_params(self, count: int) -> Params:
        return sim.sample_domain_randomized_params(count, self.generator, self.cfg.domain_randomization,
                                                   nominal=self._nominal, dtype=self.dtype, device=self.device,
                                                   validate=False)

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

    # --- reset ----------------------------------------------------------------------------------------
    def _reset_idx(self, env_ids: torch.Tensor, resample_state: bool = True) -> None:
        if env_ids.numel() == 0:
            return
        if self._fixed_params is None and resample_state:
            params = self._new_params(env_ids.numel())
            self._apply_mdp_cfg(params)
            self.params.assign_(env_ids, params)
        else:
            params = self.params[env_ids]
        if resample_state:
            self.state.assign_(env_ids, sim.sample_initial_state(params, self.generator))
        state = self.state[env_ids]
        normalized_rpm = transition.normalized_rotor_speeds(params, state)
        self.action_history[env_ids] = normalized_rpm[:, None, :].expand(-1, self.cfg.action_history_length, -1)
        self.last_action[env_ids] = 0
        self.episode_length_buf[env_ids] = 0
        self.episode_return[env_ids] = 0
        self._dynamics_features[env_ids] = dynamics_features(params, state)

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[TensorDict, dict]:
        """Start new episodes in all environments (optionally reseeding the generator)."""
        if seed is not None:
            self.generator.manual_seed(seed)
        self._pool, self._pool_used = None, 0  # later episodes come from draws after this reset
        self._reset_idx(torch.arange(self.num_envs, device=self.device))
        return self.get_observations(), {}

    # --- observations ---------------------------------------------------------------------------------
    @property
    def dynamics_features(self) -> torch.Tensor:
        """(num_envs, 48) the teacher's dynamics features of every row's episode (layout: module docstring)."""
        return self._dynamics_features

    def observation_noise(self) -> torch.Tensor | None:
        """One draw of the policy observation's noise (num_envs, num_obs) from the env's generator, None when off."""
        if not any(dataclasses.asdict(self.cfg.observation_noise).values()):
            return None
        std = self.params.mdp.observation_noise
        scale = torch.cat([std.position[:, None].expand(-1, 3), std.orientation[:, None].expand(-1, 9),
                           std.linear_velocity[:, None].expand(-1, 3), std.angular_velocity[:, None].expand(-1, 3)], -1)
        noise = scale * torch.randn(scale.shape, generator=self.generator, device=self.device, dtype=self.dtype)
        return torch.nn.functional.pad(noise, (0, self.num_obs - 18))

    def get_observations(self) -> TensorDict:
        return self.observe(self.state, self.action_history)

    def observe(self, state: State, action_history: torch.Tensor) -> TensorDict:
        """The observation groups of ``state`` with ``action_history`` (num_envs, H, 4) under this env's dynamics
        parameters; differentiable in both (`eyas.distill.apg` flies the env's rows without `step`)."""
        return self._observations(*transition.observation_groups(self.params, self.target, state, action_history,
                                                                 self._dynamics_features))

    def _observations(self, noise_free: torch.Tensor, teacher: torch.Tensor) -> TensorDict:
        noise = self.observation_noise()
        policy = noise_free if noise is None else noise_free + noise
        return TensorDict({"policy": policy, "teacher": teacher}, batch_size=[self.num_envs], device=self.device)

    # --- step -----------------------------------------------------------------------------------------
    def step(self, actions: torch.Tensor) -> tuple[TensorDict, torch.Tensor, torch.Tensor, dict]:
        """Apply `actions` (num_envs, 4) in [-1, 1] (finite values outside are clamped, as in l2f): the compiled (or
        eager) `transition`, then what needs random draws or host values (noise, the reset pool, fixed-dynamics
        resets)."""
        actions = self._checked(actions)
        applied = actions
        if self.cfg.action_noise > 0:
            applied = actions + self.params.mdp.action_noise.normalized_rpm[:, None] * torch.randn(
                actions.shape, generator=self.generator, device=self.device, dtype=self.dtype)
        if self._fixed_params is None:
            self._fill_pool()
        out = self._transition(self.state, actions, applied, self.params, self.target, self.last_action,
                               self.action_history, self.episode_length_buf, self.episode_return,
                               self._dynamics_features, self.max_episode_length, self._pool, self._pool_first)
        count = int(out["count"])  # one host sync: the pool's bookkeeping and rsl_rl's episode log
        extras = {"time_outs": out["time_outs"], "terminated": out["terminated"],
                  "position_error": out["position_error"], "termination_terms": out["terms"]}
        if count:
            extras["log"] = out["log"]
        self.state, self.params, self._dynamics_features = out["state"], out["params"], out["features"]
        self.action_history, self.last_action = out["action_history"], out["last_action"]
        self.episode_length_buf, self.episode_return = out["length"], out["episode_return"]
        if self._pool is not None:
            self._pool_used += count
            self._pool_first.fill_(self._pool_used)
        elif count:  # fixed dynamics: new initial states for the finished rows, then their observations
            self._reset_idx(out["dones"].nonzero()[:, 0])
            return self.get_observations(), out["rewards"], out["dones"].long(), extras
        return self._observations(out["policy"], out["teacher"]), out["rewards"], out["dones"].long(), extras

    def _checked(self, actions: torch.Tensor) -> torch.Tensor:
        if not isinstance(actions, torch.Tensor):
            raise ValueError(f"actions must be a torch.Tensor of shape ({self.num_envs}, 4), got {type(actions).__name__}")
        if tuple(actions.shape) != (self.num_envs, NUM_ACTIONS):
            raise ValueError(f"actions must have shape ({self.num_envs}, {NUM_ACTIONS}) (num_envs, rotors), "
                             f"got {tuple(actions.shape)}")
        if not actions.is_floating_point():
            raise ValueError(f"actions must be a floating-point tensor, got {actions.dtype}")
        actions = actions.detach().to(self.device)
        if self.cfg.validate_actions:
            flags = torch.stack([torch.isnan(actions).any(), torch.isinf(actions).any()]).tolist()
            if flags[0]:
                raise ValueError("actions contain NaN")
            if flags[1]:
                raise ValueError("actions contain inf; actions must be finite (finite values outside [-1, 1] are clamped)")
        return actions.to(self.dtype)

    def termination_terms(self, s: State) -> dict[str, torch.Tensor]:
        """(N,) bool per termination condition of state `s` under this env's parameters (`transition`)."""
        return transition.termination_terms(self.params, self.target, s)

    # --- auto-reset pool (randomised dynamics) ----------------------------------------------------------
    def _fill_pool(self) -> None:
        """Keep at least num_envs unused episode starts (every row may finish in one step): the unused ones
        first, then new draws, 2 num_envs in all (one batched draw every ~num_envs finished episodes)."""
        size = 2 * self.num_envs
        if self._pool is not None and size - self._pool_used >= self.num_envs:
            return
        fresh = self._draw_starts(size if self._pool is None else self._pool_used)
        self._pool = fresh if self._pool is None else ResetPool.cat([self._pool[self._pool_used:], fresh])
        self._pool_used = 0
        self._pool_first.zero_()

    def _draw_starts(self, count: int) -> ResetPool:
        params = self._new_params(count)
        self._apply_mdp_cfg(params)
        state = sim.sample_initial_state(params, self.generator)
        return ResetPool(params, state, dynamics_features(params, state),
                         transition.normalized_rotor_speeds(params, state))

    # --- resume (`eyas teacher train --resume`) -------------------------------------------------------
    def state_dict(self) -> dict:
        """What `step`/`reset` read that changes in flight: random stream, dynamics, states, episode buffers."""
        pool = None if self._pool is None else [t.clone() for t in self._pool[self._pool_used:].leaves()]
        return {"generator": self.generator.get_state(), "params": [t.clone() for t in self.params.leaves()],
                "state": [t.clone() for t in self.state.leaves()], "pool": pool} | {
                    k: getattr(self, k).clone() for k in _BUFFERS}

    def load_state_dict(self, saved: dict) -> None:
        """Continue from `state_dict()` of an env built with the same config."""
        for tree in ("params", "state"):
            leaves = getattr(self, tree).leaves()
            if [t.shape for t in leaves] != [t.shape for t in saved[tree]]:
                raise ValueError(f"saved env {tree} do not fit this env (other num_envs or config)")
            for leaf, value in zip(leaves, saved[tree]):
                leaf.copy_(value)
        for k in _BUFFERS:
            getattr(self, k).copy_(saved[k])
        self._pool, self._pool_used = None, 0
        if saved.get("pool") is not None:  # its shape from a draw, its values from the saved pool
            self._pool = self._draw_starts(saved["pool"][0].shape[0])
            for leaf, value in zip(self._pool.leaves(), saved["pool"]):
                leaf.copy_(value)
        self._pool_first.fill_(0)
        self.generator.set_state(saved["generator"])

    def close(self) -> None:
        pass


_BUFFERS = ("action_history", "last_action", "episode_length_buf", "episode_return", "_dynamics_features")


def dynamics_features(params: Params, state: State) -> torch.Tensor:
    """(B, 48) privileged dynamics features of the teacher observation (layout in the module docstring)."""
    d = params.dynamics
    n = params.batch_size
    weight = d.mass * torch.linalg.vector_norm(d.gravity, dim=-1)
    max_speed = d.action_limit.max[:, None, None]
    powers = torch.cat([torch.ones_like(max_speed), max_speed, max_speed * max_speed], dim=-1)  # (B, 1, 3)
    rotor_distance = torch.linalg.vector_norm(d.rotor_positions, dim=-1)
    arm = rotor_distance.amax(-1)
    j_inv_diagonal = torch.diagonal(d.J_inv, dim1=-2, dim2=-1)
    force = state.force if state.force is not None else torch.zeros_like(state.position)
    torque = state.torque if state.torque is not None else torch.zeros_like(state.position)
    features = torch.cat([
        d.mass.log()[:, None],
        sim.thrust_to_weight_ratio(params)[:, None],
        (arm / 0.1)[:, None],
        j_inv_diagonal.abs().clamp(min=1e-12).log10(),
        (d.rotor_thrust_coefficients * powers / weight[:, None, None]).reshape(n, 12),
        (d.rotor_positions / arm[:, None, None]).reshape(n, 12),
        d.rotor_torque_constants * 100,
        d.rotor_time_constants_rising / 0.1,
        d.rotor_time_constants_falling / 0.1,
        force / weight[:, None],
        (d.J_inv * torque[:, None, :]).sum(-1) / 100,
    ], dim=-1)
    assert features.shape[-1] == NUM_DYNAMICS_FEATURES
    return features


def make_env(cfg: PointControlEnvCfg | None = None, **overrides) -> PointControlEnv:
    """gymnasium entry point of `Isaac-Quadcopter-Point-Ctrl-v0`: `gym.make(id, cfg=..., num_envs=..., ...)`."""
    overrides.pop("render_mode", None)
    return PointControlEnv(cfg, **overrides)
