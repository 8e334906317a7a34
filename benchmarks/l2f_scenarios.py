"""The l2f side of the scorecard's scenario mechanisms (`eyas.envs.scenario`), for `scorecard_l2f.py`.

A scorecard group's episodes are read from the embedded env right after its reset (`Episodes.read`): every row's
parameters, initial state (disturbance force included), task and noise scale. They are then flown in l2f's C++
vector environment (`L2FBatch`), where everything l2f 2.0.18 does not have is built from its parts:

* **disturbance force** (l2f's `random_force` draw, plus wind, plus a gust from its step on): l2f's Python state
  does not expose the force, so each row's constant world-frame force F enters as gravity ``g + F / m`` in that
  row's parameters (the same acceleration: l2f adds ``F / m`` to ``g`` in the linear dynamics) with l2f's own
  disturbances set to zero. A gust rewrites the row's parameters at its step. The torque must be zero (no
  scorecard case draws one; l2f's state could not take it either);
* **weak motor**: the rotor's three thrust coefficients scaled (float32 products, as the embedded step forms them);
* **actuation delay** of ``k + f`` steps: two l2f steps, command ``a[t-k-1]`` with ``integration.dt = f dt``, then
  ``a[t-k]`` with ``(1 - f) dt`` (one step of ``a[t-k]`` when every row's ``f`` is 0); commands before the
  episode are the initial rotor speeds (as the env fills its buffer);
* **reference, observation, termination**: computed here in numpy from l2f's state, PX4's Lissajous written out
  again (not `eyas.envs.scenario.reference_rows`), so the env's versions are checked too;
* **observation noise**: the env's own stream, reproduced: a generator seeded ``seed + NOISE_SEED``, one
  ``(num_envs, 18)`` float32 standard-normal draw per observation (the first at the reset), times each row's
  standard deviations and noise scale.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
from dataclasses import dataclass

import l2f
import numpy as np
import torch

from eyas.envs.point_control import NOISE_SEED
from eyas.envs.scenario import TASK

NOISE_FIELDS = (("position", 3), ("orientation", 9), ("linear_velocity", 3), ("angular_velocity", 3))
ZERO_DISTURBANCES = {"random_force": {"mean": 0.0, "std": 0.0}, "random_torque": {"mean": 0.0, "std": 0.0}}
STATE_FIELDS = (("position", 3), ("orientation", 4), ("linear_velocity", 3), ("angular_velocity", 3), ("rpm", 4))


@dataclass
class Episodes:
    """One scorecard group's episodes, one per row (numpy; float32 where the env holds float32)."""

    values: list[dict]  # each row's parameters as l2f's JSON structure (force, motors and dt applied per step kind)
    state: np.ndarray  # (n, 17) position, orientation (w first), velocity, body rates, rotor speeds
    force: np.ndarray  # (n, 3) [N] world frame: l2f's random_force draw and the wind
    task: np.ndarray  # (n, TASK.SIZE)
    dt: np.ndarray  # (n,) float32
    action_limits: np.ndarray  # (n, 2) float32 min, max rotor speed
    thresholds: np.ndarray  # (n, 4) float32: enabled, position, linear velocity, angular velocity
    noise_std: np.ndarray | None  # (n, 18) float32 per observation entry (noise scale applied), None: no noise
    clip: bool  # PX4's clipping of the observed errors
    seed: int
    max_steps: int

    @property
    def n(self) -> int:
        return len(self.state)

    @classmethod
    def read(cls, env, seed: int) -> "Episodes":
        """The episodes of ``env`` after `env.reset(seed=seed)` (resets it)."""
        env.reset(seed=seed)
        s, p = env.state, env.params
        if s.torque is not None and bool(s.torque.abs().gt(0).any()):
            raise ValueError("a disturbance torque: l2f's Python state cannot take it (no scorecard case draws one)")
        if bool(p.mdp.action_noise.normalized_rpm.gt(0).any()):
            raise ValueError("action noise: l2f would draw its own (the env draws it from the noise stream)")
        f32 = lambda t: t.detach().cpu().numpy().astype(np.float32)  # noqa: E731
        state = np.concatenate([f32(getattr(s, name)) for name, _ in STATE_FIELDS], -1)
        term, task = p.mdp.termination, f32(env.task)
        thresholds = np.stack([f32(term.enabled.float()), f32(term.position_threshold),
                               f32(term.linear_velocity_threshold), f32(term.angular_velocity_threshold)], -1)
        noise = None
        if any(dataclasses.asdict(env.cfg.observation_noise).values()):  # the env draws only then
            std = np.concatenate([np.repeat(f32(getattr(p.mdp.observation_noise, k))[:, None], m, 1)
                                  for k, m in NOISE_FIELDS], -1)
            noise = std * task[:, TASK.NOISE_SCALE, None]
        limits = np.stack([f32(p.dynamics.action_limit.min), f32(p.dynamics.action_limit.max)], -1)
        force = f32(s.force) if s.force is not None else np.zeros((env.num_envs, 3), np.float32)
        return cls([p[i].to_dict() for i in range(env.num_envs)], state, force, task, f32(p.integration.dt),
                   limits, thresholds, noise, bool(env.cfg.scenario.observation_clip), int(seed),
                   int(env.max_episode_length))

    def normalized_rpm(self, x: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """(n, 4) rotor speeds of the states ``x`` (of ``rows``, default all) in [-1, 1] over the action limits
        (the initial command fill)."""
        limits = self.action_limits if rows is None else self.action_limits[rows]
        low, high = limits[:, :1], limits[:, 1:]
        return (x[:, 13:17] - low) / (high - low) * np.float32(2) - np.float32(1)

    def delay(self) -> tuple[np.ndarray, np.ndarray]:
        """Every row's delay as (whole steps k (int), fraction f (float32)) (the env's floor and difference)."""
        d = self.task[:, TASK.DELAY]
        k = np.floor(d)
        return k.astype(np.int64), (d - k).astype(np.float32)


# ------------------------------------------------------------------------------------------- reference, observation
def lissajous(task: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position, velocity) (n, 3) of each row's reference at time ``t`` (n,) [s]: PX4 `mc_raptor intref
    lissajous A B C fa fb fc duration ramp` (the ramp accelerates the figure's phase from rest), turned by the
    heading about z. Rows without a reference have zero amplitudes."""
    t = t.astype(np.float64)
    amplitude, frequency = task[:, TASK.AMPLITUDE].astype(np.float64), task[:, TASK.FREQUENCY].astype(np.float64)
    duration, ramp = task[:, TASK.DURATION].astype(np.float64), task[:, TASK.RAMP].astype(np.float64)
    omega = 2 * math.pi / duration
    ramping = t < ramp
    safe = np.where(ramp > 0, ramp, 1.0)
    phase = omega * np.where(ramping, t * t / (2 * safe), t - ramp / 2)
    rate = omega * np.where(ramping, t / safe, 1.0)
    position = amplitude * np.sin(frequency * phase[:, None])
    velocity = amplitude * frequency * np.cos(frequency * phase[:, None]) * rate[:, None]
    heading = task[:, TASK.HEADING].astype(np.float64)
    c, s = np.cos(heading), np.sin(heading)
    turn = lambda v: np.stack([c * v[:, 0] - s * v[:, 1], s * v[:, 0] + c * v[:, 1], v[:, 2]], -1)  # noqa: E731
    return turn(position), turn(velocity)


def rotation_matrix(q: np.ndarray) -> np.ndarray:
    """(n, 9) row-major body-to-world rotation of the w-first unit quaternions ``q`` (n, 4)."""
    w, x, y, z = q.T
    return np.stack([1 - 2 * y * y - 2 * z * z, 2 * x * y - 2 * w * z, 2 * x * z + 2 * w * y,
                     2 * x * y + 2 * w * z, 1 - 2 * x * x - 2 * z * z, 2 * y * z - 2 * w * x,
                     2 * x * z - 2 * w * y, 2 * y * z + 2 * w * x, 1 - 2 * x * x - 2 * y * y], -1)


def observe(x: np.ndarray, reference: tuple[np.ndarray, np.ndarray], last_action: np.ndarray,
            clip: bool) -> np.ndarray:
    """(n, 22) RAPTOR's noise-free observation: position and velocity relative to the reference (PX4's clipping
    to +-0.5 m and +-1 m/s with ``clip``), rotation matrix, body rates, the last action."""
    position, velocity = x[:, 0:3] - reference[0], x[:, 7:10] - reference[1]
    if clip:
        position, velocity = position.clip(-0.5, 0.5), velocity.clip(-1.0, 1.0)
    return np.concatenate([position, rotation_matrix(x[:, 3:7]), velocity, x[:, 10:13], last_action],
                          -1).astype(np.float32)


def terminated(x: np.ndarray, reference: tuple[np.ndarray, np.ndarray], thresholds: np.ndarray) -> np.ndarray:
    """(n,) l2f's termination relative to the reference (any |position error| or |velocity error| component or
    |body rate| over its row's threshold, where enabled), or a non-finite state."""
    enabled, limit, speed, spin = (thresholds[:, k] for k in range(4))
    with np.errstate(invalid="ignore"):
        out = ((np.abs(x[:, 0:3] - reference[0]) > limit[:, None]).any(-1)
               | (np.abs(x[:, 7:10] - reference[1]) > speed[:, None]).any(-1)
               | (np.abs(x[:, 10:13]) > spin[:, None]).any(-1))
    return (out & (enabled > 0)) | ~np.isfinite(x[:, :13]).all(-1)


class NoiseDraws:
    """The embedded env's observation noise, draw by draw (module docstring)."""

    def __init__(self, episodes: Episodes):
        self.std = None if episodes.noise_std is None else torch.from_numpy(episodes.noise_std)
        self.generator = torch.Generator().manual_seed(episodes.seed + NOISE_SEED)

    def draw(self) -> np.ndarray | None:
        """The next (n, 18) noise, None without noise."""
        if self.std is None:
            return None
        return (self.std * torch.randn(self.std.shape, generator=self.generator, dtype=torch.float32)).numpy()


# ------------------------------------------------------------------------------------------- l2f
def row_json(values: dict, force: np.ndarray, motor_scale: np.ndarray, dt: float) -> str:
    """A row's l2f parameters with the world force ``force`` as gravity, the rotors' thrust curves scaled by
    ``motor_scale`` (4,) and the integration step ``dt``."""
    v = copy.deepcopy(values)
    d = v["dynamics"]
    mass = np.float32(d["mass"])
    d["gravity"] = [float(np.float32(g) + np.float32(f) / mass) for g, f in zip(d["gravity"], force)]
    d["rotor_thrust_coefficients"] = [[float(np.float32(c) * np.float32(s)) for c in rotor]
                                      for rotor, s in zip(d["rotor_thrust_coefficients"], motor_scale)]
    v["integration"] = {"dt": float(dt)}
    v["disturbances"] = copy.deepcopy(ZERO_DISTURBANCES)  # the force is in the gravity; l2f draws zero
    return json.dumps(v)


class L2FBatch:
    """The rows of an `Episodes` in one l2f vector environment (padded to l2f's next vector size), stepped with
    the delay split; a row's force can change (a gust). ``rows`` picks a subset of the episodes' rows."""

    def __init__(self, episodes: Episodes, rows: np.ndarray | None = None):
        self.rows = np.arange(episodes.n) if rows is None else np.asarray(rows)
        self.n = len(self.rows)
        self.size = next(k for k in sorted(l2f.vector_selector) if k >= self.n)
        self.vector = vector = l2f.vector_selector[self.size]
        self.device, self.env, self.rng = l2f.Device(), vector.VectorEnvironment(), vector.VectorRng()
        vector.initialize_environment(self.device, self.env)
        vector.initialize_rng(self.device, self.rng, 0)  # draws nothing: no disturbances, no noise
        self.single = l2f.Environment()
        l2f.initialize_environment(self.device, self.single)
        self.values = [episodes.values[i] for i in self.rows]
        self.force = episodes.force[self.rows].copy()
        self.scale = episodes.task[self.rows][:, TASK.MOTOR_SCALE]
        self.dt = episodes.dt[self.rows]
        k, f = episodes.delay()
        self.k, self.f = k[self.rows], f[self.rows]
        self.split = bool((self.f > 0).any())
        self._parameters: dict[str, object] = {}
        self.state, self._next = vector.VectorState(), vector.VectorState()
        vector.sample_initial_state(self.device, self.env, self.parameters("full"), self.state, self.rng)

    def parameters(self, kind: str):
        """The vector parameters of a ``kind`` of step: "full" (dt), "first" (f dt) or "second" ((1 - f) dt)."""
        if kind not in self._parameters:
            dt = {"full": self.dt, "first": self.f * self.dt, "second": (np.float32(1) - self.f) * self.dt}[kind]
            vp = self.vector.VectorParameters()
            self.vector.initial_parameters(self.device, self.env, vp)
            sets = vp.parameters
            for j in range(self.size):
                i = min(j, self.n - 1)  # padding rows repeat the last row
                text = row_json(self.values[i], self.force[i], self.scale[i], dt[i])
                l2f.parameters_from_json(self.device, self.single, text, sets[j])
            vp.parameters = sets
            self._parameters[kind] = vp
        return self._parameters[kind]

    def add_force(self, rows: np.ndarray, force: np.ndarray) -> None:
        """Add ``force`` (len(rows), 3) to the rows' world force from the next step on (a gust)."""
        self.force[rows] += force
        self._parameters.clear()

    def write(self, x: np.ndarray, rows: np.ndarray | None = None) -> None:
        """Set the states of ``rows`` to ``x`` (len(rows), 17); default: every row (padding rows: the last)."""
        if rows is None:
            rows = np.arange(self.size)
            x = x[np.minimum(rows, len(x) - 1)]
        states = self.state.states
        for j, row in zip(rows, x):
            start = 0
            for name, m in STATE_FIELDS:
                setattr(states[j], name, row[start:start + m].tolist())
                start += m
        self.state.states = states

    def read(self) -> np.ndarray:
        """(n, 17) float32 states."""
        return np.array([[*s.position, *s.orientation, *s.linear_velocity, *s.angular_velocity, *s.rpm]
                         for s in self.state.states[:self.n]], dtype=np.float32)

    def step(self, commands: np.ndarray) -> None:
        """One step: ``commands`` (n, S, 4) are a[t], a[t-1], ... (most recent first); each row integrates
        a[t-k-1] for f dt and a[t-k] for the rest (module docstring)."""
        rows = np.arange(self.n)
        newer = self._padded(commands[rows, self.k])
        if self.split:
            older = self._padded(commands[rows, self.k + 1])
            self._step("first", older)
            self._step("second", newer)
        else:
            self._step("full", newer)

    def _step(self, kind: str, actions: np.ndarray) -> None:
        self.vector.step(self.device, self.env, self.parameters(kind), self.state, actions, self._next, self.rng)
        self.state.assign(self._next)

    def _padded(self, a: np.ndarray) -> np.ndarray:
        out = np.empty((self.size, 4), np.float32)
        out[:self.n], out[self.n:] = a, a[-1]
        return np.ascontiguousarray(out)
