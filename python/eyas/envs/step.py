"""The env step, written once: the env (`PointControlEnv`), evaluation, the scorecard and APG's differentiable
flights all step `EnvState` with `advance`.

`EnvState` holds every row's episode as packed rows (`eyas.sim.fused`: one contiguous (B,) row per quantity):
the multirotor state ``X`` (23, B), the episode's constants: parameters ``P`` (145, B), task ``T``
(`eyas.envs.scenario.TASK`) and the teacher's dynamics features ``F`` (48, B); the policy's action history ``H`` (4 H, B, most recent first), the
commands still in the actuation delay ``C`` (4 S, B, most recent first; None without delay), the previous action
``A`` (4, B; l2f's d_action term), the steps taken ``length`` and the episode's return ``ret`` (B,).

* `observe(s)`: the noise-free observation rows, the policy's (18 + 4 H) and the teacher's (+ 4 rotor speeds + 48
  features; + `TASK_OBSERVATION` rows with ``Settings.privileged``);
* `advance(s, actions)`: one step of every row, pure and differentiable: the actions (as given) enter the
  history, the reward and the delay buffer; the rotors' setpoint follows the delayed commands (two RK4 sub-steps
  of l2f's integrator when the delay is not a whole number of steps); a gust adds its force when its step comes;
  termination and reward (l2f's, relative to the row's reference);
* `env_step(s, ...)`: `advance`, then the finished rows begin the next episode each row holds drawn ahead
  (`EpisodeStarts`), then `observe`: the env's whole step as one function, compiled by `eyas.compile`.

Nothing here draws random numbers or reads values on the host; the env draws (noise, next starts) around it.
`Settings` are Python constants: a compiled step is specialised on them, so what a configuration switches off
costs nothing (with every scenario setting off, the step is l2f's).
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from eyas.sim import fused
from eyas.sim.fused import Rows, param_rows

from .scenario import TASK, reference_rows

TERMS = ("position", "linear_velocity_xy", "linear_velocity_z", "angular_velocity", "non_finite")
LOG_KEYS = ("/episode/return", "/episode/length", "/episode/terminated") + tuple(f"/episode/termination/{k}"
                                                                              for k in TERMS)
NUM_FEATURES = 48
FORCE_FEATURES = slice(42, 45)  # disturbance force / (m |g|) among the features (`eyas.envs.features`)
# the privileged teacher's extra rows: reference acceleration (3), motor thrust scales (4), delay in steps (1), the
# two commands issued before the last (8; the last one is the policy's history)
TASK_OBSERVATION = 16
PENDING_OBSERVED = 2


class Settings(NamedTuple):
    """What a step is specialised on (constants in a compiled graph)."""

    moving: bool = False  # Lissajous references (`ScenarioCfg.reference_share` > 0)
    clip: bool = False  # PX4's clipping of the observed position and velocity errors
    delay_slots: int = 0  # commands the delay buffer holds (0: no delay)
    gusts: bool = False
    weak_motors: bool = False
    privileged: bool = False  # the teacher rows end with `TASK_OBSERVATION` task rows


class EnvState(NamedTuple):
    """Every row's episode (module docstring)."""

    X: torch.Tensor
    P: torch.Tensor
    T: torch.Tensor
    F: torch.Tensor
    H: torch.Tensor
    C: torch.Tensor
    A: torch.Tensor
    length: torch.Tensor
    ret: torch.Tensor

    def where(self, keep: torch.Tensor, other: "EnvState") -> "EnvState":
        """Rows where ``keep`` from ``self``, the others from ``other`` (APG: finished rows keep their last state);
        the episode's constants (P, T, F) are ``self``'s."""
        pick = lambda a, b: None if a is None else torch.where(keep, a, b)  # noqa: E731
        return self._replace(X=pick(self.X, other.X), H=pick(self.H, other.H), C=pick(self.C, other.C),
                             A=pick(self.A, other.A), length=pick(self.length, other.length),
                             ret=pick(self.ret, other.ret))

    def detached(self) -> "EnvState":
        """The state cut from the autograd graph (truncated backpropagation, APG)."""
        return EnvState(*(None if t is None else t.detach() for t in self))


class Outcome(NamedTuple):
    """What one step of every row gave (B,) each; ``position_error`` / ``velocity_error`` are rows (3 each)."""

    terminated: torch.Tensor
    terms: tuple
    rewards: torch.Tensor
    position_error: Rows  # p - p_ref of the state reached
    velocity_error: Rows


class EpisodeStarts:
    """Starts of N episodes in one packed (K, N) tensor ``data``, one column each, in blocks: initial state ``X``
    (23), parameters ``P`` (145; absent where the env's rows keep fixed parameters), task ``T``, dynamics
    ``features`` (48) and the ``rotor_speeds`` (4, in [-1, 1]) that fill the action history and the delay buffer.
    One tensor, so that moving starts between the env's rows and its reservoir is one indexing operation."""

    def __init__(self, data: torch.Tensor, has_params: bool):
        self.data, self.has_params = data, has_params
        self.blocks = _LAYOUTS[has_params]

    @staticmethod
    def layout(has_params: bool) -> dict[str, slice]:
        """Each block's rows in ``data``."""
        sizes = {"X": fused.STATE.size, "P": fused.PARAMS.size if has_params else 0, "T": TASK.SIZE,
                 "features": NUM_FEATURES, "rotor_speeds": 4}
        out, start = {}, 0
        for name, size in sizes.items():
            out[name], start = slice(start, start + size), start + size
        return out

    @classmethod
    def rows(cls, has_params: bool) -> int:
        return cls.layout(has_params)["rotor_speeds"].stop

    @classmethod
    def empty(cls, count: int, has_params: bool, dtype: torch.dtype, device) -> "EpisodeStarts":
        """Room for ``count`` starts, to be written block by block (a reservoir holds several MB)."""
        return cls(torch.empty(cls.rows(has_params), count, dtype=dtype, device=device), has_params)

    def __getattr__(self, name: str) -> torch.Tensor | None:
        if name in ("X", "P", "T", "features", "rotor_speeds"):
            block = self.data[self.blocks[name]]
            return None if name == "P" and not self.has_params else block
        raise AttributeError(name)

    def __len__(self) -> int:
        return self.data.shape[1]

    def columns(self, index) -> "EpisodeStarts":
        return EpisodeStarts(self.data[:, index], self.has_params)

    def cat(self, other: "EpisodeStarts") -> "EpisodeStarts":
        return EpisodeStarts(torch.cat([self.data, other.data], 1), self.has_params)


_LAYOUTS = {has_params: EpisodeStarts.layout(has_params) for has_params in (False, True)}  # made once: the env
# takes starts (`EpisodeStarts.columns`) every step


# ------------------------------------------------------------------------------------------- rows of the step
def normalized_rotor_speeds(x: Rows, P: torch.Tensor) -> Rows:
    """The 4 rotor-speed rows mapped to [-1, 1] over the action limits (l2f's action scale)."""
    low, high = param_rows(P, "dynamics.action_limit.min"), param_rows(P, "dynamics.action_limit.max")
    return tuple((r - low) / (high - low) * 2 - 1 for r in x[13:17])


def norm(rows: Rows, eps: float | None = None) -> torch.Tensor:
    """Euclidean norm of a vector given as rows (``eps`` under the root: a finite gradient at 0)."""
    total = rows[0] * rows[0]
    for r in rows[1:]:
        total = total + r * r
    return (total + eps).sqrt() if eps is not None else total.sqrt()


def errors(x: Rows, s: EnvState, length: torch.Tensor, moving: bool) -> tuple[Rows, Rows, Rows]:
    """(position, velocity) of the state rows ``x`` relative to the reference at ``length`` steps, and the
    reference's acceleration (zero rows without references)."""
    if not moving:
        zero = torch.zeros_like(x[0])
        return x[0:3], x[7:10], (zero, zero, zero)
    p, v, a = reference_rows(s.T, length, s.P)
    return tuple(x[k] - p[k] for k in range(3)), tuple(x[7 + k] - v[k] for k in range(3)), a


def termination_rows(x: Rows, P: torch.Tensor, position: Rows, velocity: Rows) -> Rows:
    """(B,) bool rows, one per termination condition, in `TERMS` order (l2f's, the velocity one split by axis), of
    the state rows ``x`` with ``position`` and ``velocity`` relative to the reference."""
    term = "mdp.termination."
    enabled = param_rows(P, term + "enabled") != 0
    limit, speed = param_rows(P, term + "position_threshold"), param_rows(P, term + "linear_velocity_threshold")
    spin = param_rows(P, term + "angular_velocity_threshold")
    far = [e.abs() > limit for e in position]
    fast = [e.abs() > speed for e in velocity]
    spinning = [x[10 + k].abs() > spin for k in range(3)]
    finite = torch.isfinite(x[0])
    for k in range(1, 13):
        finite = finite & torch.isfinite(x[k])
    return (enabled & (far[0] | far[1] | far[2]), enabled & (fast[0] | fast[1]), enabled & fast[2],
            enabled & (spinning[0] | spinning[1] | spinning[2]), ~finite)


def reward_rows(x: Rows, x_next: Rows, position: Rows, actions: Rows, last_action: Rows,
                P: torch.Tensor) -> torch.Tensor:
    """l2f `Squared` reward (without the termination branch) of the transition x -a-> x_next; ``position``: the
    pre-step state's position relative to the reference."""
    w = lambda name: param_rows(P, "mdp.reward." + name)  # noqa: E731
    dt = param_rows(P, "integration.dt")
    position_cost = norm(position)
    clip = w("position_clip")
    position_cost = torch.where(clip > 0, torch.minimum(position_cost, clip), position_cost)
    orientation_cost = 2 * torch.acos((1 - x[6].abs()).clamp(-1, 1))
    hover = param_rows(P, "dynamics.hovering_throttle_relative")
    action_cost = ((actions[0] + 1) / 2 - hover).square()
    for a in actions[1:]:
        action_cost = action_cost + ((a + 1) / 2 - hover).square()
    weighted = (w("position") * position_cost + w("orientation") * orientation_cost
                + w("linear_velocity") * norm(x[7:10]) + w("angular_velocity") * norm(x[10:13])
                + w("linear_acceleration") * norm([x_next[k] - x[k] for k in range(7, 10)]) / dt
                + w("angular_acceleration") * norm([x_next[k] - x[k] for k in range(10, 13)]) / dt
                + w("action") * action_cost + w("d_action") * norm([a - b for a, b in zip(actions, last_action)]))
    out = -w("scale") * weighted + w("constant")
    return torch.where(w("non_negative") != 0, out.clamp(min=0), out)


# ------------------------------------------------------------------------------------------- observation
def observe(s: EnvState, settings: Settings, known: tuple[Rows, Rows, Rows] | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(noise-free policy observation (18 + 4 H, B), teacher observation (B-columns) as rows of one buffer (the
    policy rows a view of its first rows). Layouts: `eyas.envs.point_control`. ``known``: the rows of ``s.X``,
    ``s.H`` and the normalised rotor speeds, where the caller computed them (compiled, reading them back from the
    stacked ``X`` and ``H`` would cost a store and a load of each)."""
    x, history, rotor_speeds = known or (tuple(s.X.unbind(0)), tuple(s.H.unbind(0)), None)
    position, velocity, acceleration = errors(x, s, s.length, settings.moving)
    if settings.clip:
        position = tuple(e.clamp(-0.5, 0.5) for e in position)
        velocity = tuple(e.clamp(-1.0, 1.0) for e in velocity)
    rotation = fused.rotation_matrix(x[3:7])
    rotor_speeds = normalized_rotor_speeds(x, s.P) if rotor_speeds is None else rotor_speeds
    rows = position + rotation[0] + rotation[1] + rotation[2] + velocity + x[10:13] + history + rotor_speeds
    features = s.F
    if settings.gusts:  # the force steps mid-episode: so do its feature rows (from the step after the gust's)
        blown = (s.T[TASK.GUST_STEP] >= 0) & (s.length.to(s.T.dtype) > s.T[TASK.GUST_STEP])
        force = tuple(f + torch.where(blown, g, 0.0) for f, g in zip(s.F[FORCE_FEATURES].unbind(0),
                                                                    s.T[TASK.GUST_FEATURE].unbind(0)))
        features = torch.cat([s.F[:FORCE_FEATURES.start], torch.stack(force), s.F[FORCE_FEATURES.stop:]])
    parts = [torch.stack(rows), features]
    if settings.privileged:
        parts.append(torch.stack(acceleration + tuple(s.T[TASK.MOTOR_SCALE].unbind(0)) + (s.T[TASK.DELAY],)
                                 + _pending(s, history)))
    teacher = torch.cat(parts)
    return teacher[:len(history) + 18], teacher


def _pending(s: EnvState, history: Rows) -> Rows:
    """The `PENDING_OBSERVED` commands issued before the last one (the last one repeated where the buffer is
    shorter)."""
    commands = tuple(s.C.unbind(0)) if s.C is not None else history[:4]
    rows = []
    for j in range(1, PENDING_OBSERVED + 1):
        slot = min(j, len(commands) // 4 - 1)
        rows += commands[4 * slot:4 * slot + 4]
    return tuple(rows)


# ------------------------------------------------------------------------------------------- the step
def advance(s: EnvState, actions: torch.Tensor, settings: Settings, noise: torch.Tensor | None = None
            ) -> tuple[EnvState, Outcome]:
    """One step of every row, without resets (module docstring). ``actions`` (B, 4) as the policy gave them; the
    action ``noise`` (B, 4, or None) is added to what reaches the rotors. Differentiable in the state and actions."""
    return _advance(s, actions, settings, noise)[1:]


def _advance(s: EnvState, actions: torch.Tensor, settings: Settings, noise: torch.Tensor | None
             ) -> tuple[Rows, EnvState, Outcome]:
    """`advance`, and the next state's rows (``X`` unstacked): a compiled step that reads them from the stacked
    ``X`` instead has inductor store that stack and load it back in further loops."""
    A = actions.to(s.X.dtype).T
    x = tuple(s.X.unbind(0))
    commands = A if noise is None else A + noise.to(s.X.dtype).T
    d = fused.dynamics_rows(s.P)
    if settings.weak_motors:
        scale = s.T[TASK.MOTOR_SCALE]
        d = d._replace(thrust_coefficients=tuple(tuple(c * scale[i] for c in rotor)
                                                 for i, rotor in enumerate(d.thrust_coefficients)))
    if settings.gusts:
        gust = s.length.to(s.X.dtype) == s.T[TASK.GUST_STEP]
        x = x[:17] + tuple(torch.where(gust, f + g, f) for f, g in zip(x[17:20], s.T[TASK.GUST_FORCE])) + x[20:]
    C = s.C
    if settings.delay_slots:
        x_next, C = _delayed_step(x, tuple(commands.unbind(0)), s, d)
    else:
        x_next = fused.step_rows(x, tuple(commands.unbind(0)), d)
    length = s.length + 1
    position_before = errors(x, s, s.length, settings.moving)[0]
    position, velocity, _ = errors(x_next, s, length, settings.moving)
    terms = termination_rows(x_next, s.P, position, velocity)
    terminated = terms[0] | terms[1] | terms[2] | terms[3] | terms[4]
    step_reward = reward_rows(x, x_next, position_before, tuple(A.unbind(0)), tuple(s.A.unbind(0)), s.P)
    rewards = torch.where(terminated, param_rows(s.P, "mdp.reward.termination_penalty"), step_reward)
    history = torch.cat([A, s.H[:-4]]) if s.H.shape[0] > 4 else A
    nxt = EnvState(torch.stack(x_next), s.P, s.T, s.F, history, C, A, length, s.ret + rewards)
    return x_next, nxt, Outcome(terminated, terms, rewards, position, velocity)


def _delayed_step(x: Rows, commands: Rows, s: EnvState, d: fused.DynamicsRows) -> tuple[Rows, torch.Tensor]:
    """The RK4 step with the actuation delay (`eyas.envs.scenario`): command ``a[t-k-1]`` for ``f dt``, then
    ``a[t-k]`` for the rest of the step; returns the next state rows and the delay buffer with ``commands`` in."""
    delay = s.T[TASK.DELAY]
    k = delay.floor()
    f = delay - k
    buffer = tuple(s.C.unbind(0))  # a[t-1], a[t-2], ... (4 rows each)
    slots = len(buffer) // 4
    older = [commands] + [buffer[4 * j:4 * j + 4] for j in range(slots)]  # older[j] = a[t-j]

    def command(lag: torch.Tensor) -> Rows:  # a[t - lag] per row
        out = older[0]
        for j in range(1, slots + 1):
            out = tuple(torch.where(lag == j, o, c) for o, c in zip(older[j], out))
        return out

    first = fused.step_rows(x, command(k + 1), d._replace(dt=f * d.dt))
    x_next = fused.step_rows(first, command(k), d._replace(dt=(1 - f) * d.dt))
    return x_next, torch.stack(commands + buffer[:-4])


def env_step(s: EnvState, actions: torch.Tensor, noise: torch.Tensor | None, starts: torch.Tensor,
             max_length: torch.Tensor, settings: Settings, has_params: bool) -> dict:
    """The env's whole step (module docstring); ``starts`` holds each row's next episode start
    (`EpisodeStarts.data`), ``max_length`` the steps after which an episode times out (a tensor: one compiled graph
    for every episode length). Finished rows begin that episode: their state, history, delay buffer and features come
    from it; their parameters and task do not (the env copies those for the finished rows alone, which is cheaper
    than a select over every row). Returns the next ``X``, ``H``, ``C``, ``A``, ``length``, ``ret`` (``F`` with
    gusts: otherwise the teacher rows hold the features), the teacher observation rows ``teacher`` (the policy's
    are its first rows), ``rewards``, ``dones``, ``terminated``, ``time_outs``, ``terms``, the finished episodes'
    mean statistics ``log``, ``position_error`` and ``checks`` = (rows finished, any NaN action, any inf action):
    one host read for all three."""
    x_next, nxt, out = _advance(s, actions, settings, noise)
    time_outs = (nxt.length >= max_length) & ~out.terminated
    dones = out.terminated | time_outs
    count = dones.sum()
    finished = (nxt.ret, nxt.length.to(out.rewards.dtype), out.terminated.to(out.rewards.dtype),
                *(t.to(out.rewards.dtype) for t in out.terms))
    log = torch.stack([(f * dones).sum() for f in finished]) / count.clamp(min=1)
    checks = torch.stack([count, torch.isnan(actions).any().long(), torch.isinf(actions).any().long()])
    blocks = EpisodeStarts.layout(has_params)
    begun, known = _begin_finished(nxt, x_next, dones, starts, blocks, settings)
    _, teacher = observe(begun, settings, known)
    result = {"X": begun.X, "H": begun.H, "C": begun.C, "A": begun.A, "length": begun.length, "ret": begun.ret,
              "teacher": teacher, "rewards": out.rewards, "terminated": out.terminated, "time_outs": time_outs,
              "dones": dones, "terms": torch.stack(out.terms), "log": log, "position_error": norm(out.position_error),
              "checks": checks}
    return result | ({"F": begun.F} if settings.gusts else {})


def _begin_finished(s: EnvState, x: Rows, dones: torch.Tensor, starts: torch.Tensor, blocks: dict,
                    settings: Settings) -> tuple[EnvState, tuple[Rows, Rows, Rows]]:
    """`env_step`'s auto-reset of ``s`` (its state's rows ``x``): the state after it (parameters as they were; the
    task the new one where the observation reads it) and the rows of its ``X``, its ``H`` and every row's
    normalised rotor speeds (`observe`'s ``known``)."""
    rows = tuple(starts.unbind(0))
    x_new = tuple(torch.where(dones, a, b) for a, b in zip(rows[blocks["X"]], x))
    rotor_speeds = tuple(torch.where(dones, a, b) for a, b in zip(rows[blocks["rotor_speeds"]],
                                                                  normalized_rotor_speeds(x, s.P)))
    history = tuple(torch.where(dones, rotor_speeds[k % 4], h) for k, h in enumerate(s.H.unbind(0)))
    C = (torch.where(dones, torch.stack(rotor_speeds).repeat(s.C.shape[0] // 4, 1), s.C) if s.C is not None
         else None)
    T = torch.where(dones, starts[blocks["T"]], s.T) if settings.moving or settings.privileged else s.T
    keep = ~dones
    # contiguous: the env feeds A back as the next step's input, and another layout would be a second graph
    return EnvState(torch.stack(x_new), s.P, T, torch.where(dones, starts[blocks["features"]], s.F),
                    torch.stack(history), C, (s.A * keep).contiguous(), s.length * keep,
                    s.ret * keep), (x_new, history, rotor_speeds)


def policy_observation(state, action_history: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 18 + 4 H) noise-free RAPTOR policy observation of the `eyas.sim.State` ``state`` with ``action_history``
    (B, H, 4), most recent first (l2f `observe`), relative to ``target`` (3,) (default: the origin)."""
    x = tuple(fused.pack_state(state).unbind(0))
    if target is not None:
        x = tuple(x[k] - target[k] for k in range(3)) + x[3:]
    rotation = fused.rotation_matrix(x[3:7])
    rows = x[0:3] + rotation[0] + rotation[1] + rotation[2] + x[7:13]
    return torch.cat([fused.stack_rows(rows), action_history.reshape(len(x[0]), -1)], -1)
