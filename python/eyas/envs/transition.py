"""The fixed-shape part of `PointControlEnv.step`, written once and run compiled (torch.compile, inductor) or eager.

`transition` maps the env's tensors to the next ones: RK4 physics, termination, reward, episode counters, the
auto-reset of finished rows (each row holds the start of its next episode, drawn ahead: `EpisodeStarts`), and both
observation groups. It draws no random numbers and reads no values on the host (no syncs, no data-dependent
shapes). The random draws stay eager and in one place, the env: action noise before it, observation noise after
it, and the next episode starts.

It computes on (B,) rows: the env keeps everything packed, one contiguous row per quantity (`eyas.sim.fused`):
state (23, B), parameters (145, B), action history, last action, dynamics features, and the observations come out
as rows too. Inductor then fuses the step into a few loops over the batch, 16 rows per AVX-512 instruction; only
the (B, 4) actions are read across rows.

Compilation (`PointControlEnvCfg.compile`; None reads the environment variable ``EYAS_COMPILE``, default on, ``0``
for eager): one graph with a symbolic batch size (everything else fixed) serves every ``num_envs``. Inductor keeps
its kernels in ``TORCHINDUCTOR_CACHE_DIR`` (default ``~/.cache/eyas/inductor``), so a second run pays the tracing
(seconds), not the first compile (~30-60 s on 2 cores). A compile that fails leaves one warning and the eager function.
Compiled and eager results agree to float rounding (inductor reorders and fuses arithmetic), not bit for bit.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from eyas.sim import State, fused
from eyas.sim.fused import Rows, param_rows

TERMS = ("position", "linear_velocity_xy", "linear_velocity_z", "angular_velocity", "non_finite")


class EpisodeStarts:
    """Starts of N episodes in one packed (K, N) tensor ``data``, one column each, rows in blocks: initial states
    ``X`` (23), parameters ``P`` (145; absent where the env's rows keep fixed parameters), the teacher's dynamics
    ``features`` (48) and the ``rotor_speeds`` (4, in [-1, 1]) that fill the action history. One tensor, so that
    moving starts between the env's rows and its reservoir is one indexing operation."""

    STATE_ROWS = slice(0, fused.STATE.size)  # the blocks' rows in ``data`` (the parameters between, when present)
    FEATURE_ROWS = slice(-52, -4)
    ROTOR_SPEED_ROWS = slice(-4, None)

    def __init__(self, data: torch.Tensor, has_params: bool):
        self.data, self.has_params = data, has_params

    @classmethod
    def of(cls, X: torch.Tensor, P: torch.Tensor | None, features: torch.Tensor, rotor_speeds: torch.Tensor):
        parts = [X] + ([] if P is None else [P]) + [features, rotor_speeds]
        return cls(torch.cat(parts), P is not None)

    @classmethod
    def empty(cls, count: int, has_params: bool, dtype: torch.dtype, device) -> "EpisodeStarts":
        """Room for ``count`` starts, to be written block by block (no concatenation: a reservoir holds ~14 MB)."""
        rows = fused.STATE.size + (fused.PARAMS.size if has_params else 0) - cls.FEATURE_ROWS.start
        return cls(torch.empty(rows, count, dtype=dtype, device=device), has_params)

    @property
    def X(self) -> torch.Tensor:
        return self.data[self.STATE_ROWS]

    @property
    def P(self) -> torch.Tensor | None:
        return self.data[fused.STATE.size:fused.STATE.size + fused.PARAMS.size] if self.has_params else None

    @property
    def features(self) -> torch.Tensor:
        return self.data[self.FEATURE_ROWS]

    @property
    def rotor_speeds(self) -> torch.Tensor:
        return self.data[self.ROTOR_SPEED_ROWS]

    def __len__(self) -> int:
        return self.data.shape[1]

    def columns(self, index) -> "EpisodeStarts":
        return EpisodeStarts(self.data[:, index], self.has_params)

    def cat(self, other: "EpisodeStarts") -> "EpisodeStarts":
        return EpisodeStarts(torch.cat([self.data, other.data], 1), self.has_params)


# ------------------------------------------------------------------------------------------- rows of the step
def normalized_rotor_speeds(x: Rows, P: torch.Tensor) -> Rows:
    """The 4 rotor-speed rows mapped to [-1, 1] over the action limits (l2f's action scale)."""
    low, high = param_rows(P, "dynamics.action_limit.min"), param_rows(P, "dynamics.action_limit.max")
    return tuple((r - low) / (high - low) * 2 - 1 for r in x[13:17])


def policy_rows(x: Rows, target: torch.Tensor) -> Rows:
    """The 18 state rows of RAPTOR's policy observation: position - target, rotation matrix (row-major), linear
    velocity, body angular velocity (l2f `observe`)."""
    rotation = fused.rotation_matrix(x[3:7])
    return (tuple(x[k] - target[k] for k in range(3)) + rotation[0] + rotation[1] + rotation[2]
            + tuple(x[7:13]))


def termination_rows(x: Rows, P: torch.Tensor, target: torch.Tensor) -> Rows:
    """(B,) bool rows, one per termination condition of the state rows ``x``, in `TERMS` order (l2f's, the
    velocity one split by axis)."""
    term = "mdp.termination."
    enabled = param_rows(P, term + "enabled") != 0
    position, speed = param_rows(P, term + "position_threshold"), param_rows(P, term + "linear_velocity_threshold")
    spin = param_rows(P, term + "angular_velocity_threshold")
    far = [(x[k] - target[k]).abs() > position for k in range(3)]
    fast = [x[7 + k].abs() > speed for k in range(3)]
    spinning = [x[10 + k].abs() > spin for k in range(3)]
    finite = torch.isfinite(x[0])
    for k in range(1, 13):
        finite = finite & torch.isfinite(x[k])
    return (enabled & (far[0] | far[1] | far[2]), enabled & (fast[0] | fast[1]), enabled & fast[2],
            enabled & (spinning[0] | spinning[1] | spinning[2]), ~finite)


def norm(rows: Rows, eps: float | None = None) -> torch.Tensor:
    """Euclidean norm of a vector given as rows (``eps`` under the root: a finite gradient at 0). No float default:
    torch.compile would trace it as a symbolic input, then trace the whole step again to specialise it."""
    total = rows[0] * rows[0]
    for r in rows[1:]:
        total = total + r * r
    return (total + eps).sqrt() if eps is not None else total.sqrt()


def reward_rows(x: Rows, x_next: Rows, actions: Rows, last_action: Rows, P: torch.Tensor,
                target: torch.Tensor) -> torch.Tensor:
    """l2f `Squared` reward (without the termination branch) of the transition x -a-> x_next."""
    w = lambda name: param_rows(P, "mdp.reward." + name)  # noqa: E731
    dt = param_rows(P, "integration.dt")
    position_cost = norm([x[k] - target[k] for k in range(3)])
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


def observation_rows(X: torch.Tensor, P: torch.Tensor, history: torch.Tensor, features: torch.Tensor,
                     target: torch.Tensor, rotor_speeds: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(noise-free policy observation (18 + 4 H, B), teacher observation (18 + 4 H + 52, B)) as rows, of the packed
    state ``X`` with the action ``history`` (4 H, B) and dynamics ``features`` (48, B) (layouts:
    `eyas.envs.point_control`); ``rotor_speeds`` (4, B) when already known."""
    x = tuple(X.unbind(0))
    rotor_speeds = normalized_rotor_speeds(x, P) if rotor_speeds is None else tuple(rotor_speeds.unbind(0))
    return _observations(x, tuple(history.unbind(0)), rotor_speeds, features, target)


def _observations(x: Rows, history: Rows, rotor_speeds: Rows, features: torch.Tensor,
                  target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`observation_rows` of the rows ``x``, ``history`` and ``rotor_speeds``. One buffer, the policy rows its first
    rows (a view); compiled, the stacked rows are computed once and stored twice (into the stack, then into the cat:
    writing each row straight into its slice measured no faster, and costs one output view per row and call)."""
    teacher = torch.cat([torch.stack(policy_rows(x, target) + history + rotor_speeds), features])
    return teacher[:len(history) + 18], teacher


def policy_observation(state: State, action_history: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 18 + 4 H) noise-free RAPTOR policy observation of ``state`` with ``action_history`` (B, H, 4), most
    recent first (l2f `observe`); target: the origin unless given."""
    target = torch.zeros(3, dtype=state.position.dtype, device=state.position.device) if target is None else target
    x = tuple(fused.pack_state(state).unbind(0))
    return torch.cat([fused.stack_rows(policy_rows(x, target)), action_history.reshape(len(x[0]), -1)], -1)


def transition(X: torch.Tensor, P: torch.Tensor, actions: torch.Tensor, noise: torch.Tensor | None,
               last_action: torch.Tensor, history: torch.Tensor, length: torch.Tensor, episode_return: torch.Tensor,
               features: torch.Tensor, target: torch.Tensor, max_length: int, next_starts: torch.Tensor) -> dict:
    """One env step for all rows. ``actions`` (B, 4) as the policy gave them enter the reward and the history;
    plus the action ``noise`` (B, 4, or None) they drive the physics. Every other tensor is packed, (K, B): state
    ``X``, parameters ``P``, ``last_action`` (4, B), ``history`` (4 H, B), ``features`` (48, B), ``next_starts`` (each
    row's next episode start, `EpisodeStarts.data`); ``length`` and ``episode_return`` are (B,). Rows that finish
    begin their next episode from ``next_starts``: the returned state, buffers and observations are the new
    episode's (the env copies the new parameters and features into ``P`` and ``features`` afterwards, for the
    finished rows only). ``checks`` = (rows finished, any NaN action, any inf action): one host read for all three.

    Written for few stores: compiled, a step's time goes to memory traffic more than to arithmetic (at 4,096 envs a
    call takes ~1,000 us, ~790 us without the 48 feature rows of the teacher observation, unchanged without the
    reward; RK4 alone, `fused.step_packed`, ~340 us), and inductor stores every tensor returned."""
    A = actions.to(X.dtype).T
    x = tuple(X.unbind(0))
    applied = A if noise is None else A + noise.to(X.dtype).T
    x_next = fused.step_rows(x, tuple(applied.unbind(0)), fused.dynamics_rows(P))
    terms = termination_rows(x_next, P, target)
    terminated = terms[0] | terms[1] | terms[2] | terms[3] | terms[4]
    step_reward = reward_rows(x, x_next, tuple(A.unbind(0)), tuple(last_action.unbind(0)), P, target)
    rewards = torch.where(terminated, param_rows(P, "mdp.reward.termination_penalty"), step_reward)
    length, episode_return = length + 1, episode_return + rewards
    time_outs = (length >= max_length) & ~terminated
    dones = terminated | time_outs
    count = dones.sum()
    finished = (episode_return, length.to(rewards.dtype), terminated.to(rewards.dtype),
                *(t.to(rewards.dtype) for t in terms))
    mean_over_finished = torch.stack([(f * dones).sum() for f in finished]) / count.clamp(min=1)
    out = {"rewards": rewards, "terminated": terminated, "time_outs": time_outs, "dones": dones,
           "terms": torch.stack(terms), "log": mean_over_finished,
           "position_error": norm([x_next[k] - target[k] for k in range(3)]),
           "checks": torch.stack([count, torch.isnan(actions).any().long(), torch.isinf(actions).any().long()])}
    keep = ~dones
    starts = tuple(next_starts.unbind(0))
    x_new = tuple(torch.where(dones, s, r) for s, r in zip(starts[EpisodeStarts.STATE_ROWS], x_next))
    rotor_speeds = tuple(torch.where(dones, s, r) for s, r in zip(starts[EpisodeStarts.ROTOR_SPEED_ROWS],
                                                                  normalized_rotor_speeds(x_next, P)))
    previous = tuple(A.unbind(0)) + tuple(history.unbind(0))[:-4]
    history = tuple(torch.where(dones, rotor_speeds[k % 4], previous[k]) for k in range(len(previous)))
    features = torch.where(dones, next_starts[EpisodeStarts.FEATURE_ROWS], features)
    _, teacher = _observations(x_new, history, rotor_speeds, features, target)
    # contiguous: the env feeds it back as next step's ``last_action``, and a transposed layout there would be a
    # second compiled graph (dynamo guards on strides)
    return out | {"X": torch.stack(x_new), "history": torch.stack(history), "last_action": (A * keep).contiguous(),
                  "length": length * keep, "episode_return": episode_return * keep, "teacher": teacher}


LOG_KEYS = ("/episode/return", "/episode/length", "/episode/terminated") + tuple(f"/episode/termination/{k}"
                                                                              for k in TERMS)


_COMPILED: dict = {}
# Inductor settings for the fused steps (measured on the 2-core CPU, docs/environment.md):
# * its C++ backend gives up vectorising a loop with many non-contiguous loads or stores (its tiling heuristic);
#   the (B, 4) actions are read across rows, so the heuristic would leave the whole fused step scalar (4x slower);
# * one fused loop instead of groups of at most 64 nodes: intermediates that stay inside a loop need no buffer,
#   and every buffer is an allocation per call (23 instead of ~100 for the env step);
# * training graphs (APG's flights) save at most half of what the forward computes for the backward, which
#   recomputes the rest (pointwise, cheap): fewer tensors allocated and handed over per step (1.2 -> 1.0 s per APG
#   step of 512 x 500).
# * the env step (no backward) with inductor's C++ wrapper: the step's outputs are stacks of (B,) rows, and the
#   wrapper makes one view per row (~120) on every call, ~1 us each in Python, a fraction of that in C++ (measured:
#   a 64-env step's call 168 -> 130 us). Training graphs keep the Python wrapper.
# On CUDA the first two do not apply (Triton kernels; one 4096-node fusion did not finish its first compile in
# 195 s on an H200 with torch 2.11): inductor's own defaults there.
INDUCTOR_OPTIONS = {"cpp.enable_tiling_heuristics": False, "max_fusion_size": 4096}
ACTIVATION_MEMORY_BUDGET = 0.5


def compile_enabled(setting: bool | None) -> bool:
    """The config's choice, or (None) the environment variable EYAS_COMPILE (default on; 0/false/no: eager)."""
    if setting is not None:
        return bool(setting)
    return os.environ.get("EYAS_COMPILE", "1").strip().lower() not in ("0", "false", "no", "off", "")


def step_function(compiled: bool, device: torch.device | str = "cpu"):
    """`transition`, compiled once per process and device type when ``compiled`` (and torch.compile works here).
    Only the batch is symbolic, where the caller marks it (`mark_batch_dims`): row counts, the target's size and the
    episode length are fixed in the graph, so a call converts no sizes to tensors for the C++ wrapper and checks
    fewer guards (a 64-env call 108 -> 87 us, 1,024 envs 369 -> 325 us; the same results bit for bit). Unmarked
    (a step's first compile after `load_state_dict`), the batch becomes symbolic at the second size seen."""
    return compiled_function(transition, device=device, dynamic=None) if compiled else transition


def mark_batch_dims(dim: int, *tensors: torch.Tensor) -> None:
    """Make dimension ``dim`` of ``tensors`` symbolic in the compile that reads them first (`step_function`)."""
    for t in tensors:
        torch._dynamo.maybe_mark_dynamic(t, dim)


def compiled_function(fn, training: bool = False, device: torch.device | str = "cpu", dynamic: bool | None = True):
    """``fn`` under torch.compile (inductor; ``dynamic``: every size symbolic, or None: the marked ones, and those
    seen to change), made once per process and device type, with the kernel cache in ``TORCHINDUCTOR_CACHE_DIR``
    (default ``~/.cache/eyas/inductor``) and a one-warning eager fallback. ``training``: its backward runs too (the
    activation budget above applies). ``INDUCTOR_OPTIONS`` on the CPU only."""
    kind = torch.device(device).type
    if (fn, kind) not in _COMPILED:
        _use_eyas_cache_dir()
        options = (INDUCTOR_OPTIONS | ({} if training else {"cpp_wrapper": True})) if kind == "cpu" else None
        compiled = call = torch.compile(fn, dynamic=dynamic, options=options)
        if training:
            def call(*args, **kwargs):
                with torch._functorch.config.patch(activation_memory_budget=ACTIVATION_MEMORY_BUDGET):
                    return compiled(*args, **kwargs)

        _COMPILED[fn, kind] = _with_eager_fallback(fn, call)
    return _COMPILED[fn, kind]


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
