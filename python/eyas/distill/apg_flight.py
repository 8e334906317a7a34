"""One step of an APG flight as one pure function, so torch.compile can fuse it (forward and backward) into a few
loops; `eyas.distill.apg` calls it eager or compiled (the env's compile setting), the same code either way.

`flight_step` maps (state, action history, GRU state, alive mask, the teachers' labels) to the next ones and the
step's cost sums: the student's observation (`eyas.envs.transition.policy_observation`, plus the noise drawn for
it outside), the student's step (`student_step`: Dense+ReLU, GRU cell, Dense, as `StudentPolicy` computes it, without
its input checks, which would break the graph), l2f's RK4 step (`eyas.sim.step`), the termination terms, the APG cost
(`eyas.distill.apg`), the masked update of finished rows, and the next state's observation groups (detached, for
the teachers' labels of the next step). It draws no random numbers and reads nothing on the host.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from eyas import sim
from eyas.envs import transition
from eyas.model import StudentPolicy
from eyas.sim import Params, State
from eyas.sim.tensor_tree import TensorTree


@dataclass
class StudentWeights(TensorTree):
    """The student's parameters as plain tensors (views of the module's, so gradients reach it)."""

    w_in: torch.Tensor   # (H, obs)
    b_in: torch.Tensor   # (H,)
    w_ih: torch.Tensor   # (3H, H), gates (r, z, n)
    b_ih: torch.Tensor
    w_hh: torch.Tensor   # (3H, H)
    b_hh: torch.Tensor
    w_out: torch.Tensor  # (A, H)
    b_out: torch.Tensor

    @classmethod
    def of(cls, student: StudentPolicy) -> "StudentWeights":
        g = student.gru
        return cls(student.input_layer.weight, student.input_layer.bias, g.weight_ih_l0, g.bias_ih_l0,
                   g.weight_hh_l0, g.bias_hh_l0, student.output_layer.weight, student.output_layer.bias)

    @property
    def batch_size(self) -> int:  # not batched: TensorTree's leading axis is not a batch here
        raise TypeError("StudentWeights has no batch axis")


@dataclass
class CostWeights:
    """The APG cost's constant weights (floats, fixed for a run; the step-dependent position weight is a tensor)."""

    tilt: float
    barrier: float
    barrier_start: float
    imitation: bool


def student_step(w: StudentWeights, obs: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(action, h')`` of one `StudentPolicy` step: x = relu(W_in o + b_in); PyTorch's GRU cell (r, z, n gates,
    n = tanh(gi_n + r (W_hn h + b_hn)), h' = (1 - z) n + z h); action = W_out h' + b_out."""
    hd = h.shape[-1]
    # the ops of `StudentPolicy`'s step-wise path (`eyas.gru`), so the eager flight equals its rollout bit for bit
    x = torch.relu(torch.nn.functional.linear(obs, w.w_in, w.b_in))
    gi = torch.nn.functional.linear(x, w.w_ih, w.b_ih)
    gh = torch.addmm(w.b_hh, h, w.w_hh.t())
    rz = torch.sigmoid(gi[:, :2 * hd] + gh[:, :2 * hd])
    n = torch.tanh(torch.addcmul(gi[:, 2 * hd:], rz[:, :hd], gh[:, 2 * hd:]))
    h_next = torch.lerp(n, h, rz[:, hd:])
    return torch.nn.functional.linear(h_next, w.w_out, w.b_out), h_next


STATE_FIELDS = ("position", "orientation", "linear_velocity", "angular_velocity", "rpm", "force", "torque")


def _norm(x: torch.Tensor) -> torch.Tensor:
    """Euclidean norm over the last axis with a finite gradient at 0."""
    return (x.square().sum(-1) + 1e-12).sqrt()


def flight_step(w: StudentWeights, state: State, history: torch.Tensor, hidden: torch.Tensor, alive: torch.Tensor,
                labels: torch.Tensor | None, noise: torch.Tensor | None, params: Params, target: torch.Tensor,
                features: torch.Tensor, position_weight: torch.Tensor, c: CostWeights) -> dict:
    """One step of every row (see the module docstring). Returns the next ``state``, ``history``, ``hidden`` and
    ``alive`` (finished rows keep their last values, detached), ``terminated`` (rows ending by a termination at this
    step), the step's sums over running rows ``cost``, ``imitation`` and ``running``, and the next state's
    noise-free ``observations`` (detached groups ``policy`` and ``teacher``, for the teachers' next labels)."""
    obs = transition.policy_observation(state, history, target)
    if noise is not None:
        obs = obs + noise
    actions, hidden_next = student_step(w, obs.to(w.w_in.dtype), hidden)
    actions = actions.to(state.position.dtype)
    nxt = sim.step(state, actions, params, validate=False)
    terminated = torch.stack(list(transition.termination_terms(params, target, nxt).values())).any(0) & alive

    reward, limits = params.mdp.reward, params.mdp.termination
    tilt = 1 - sim.quaternion_to_rotation_matrix(nxt.orientation)[:, 2, 2]
    cost = ((reward.position + position_weight) * _norm(nxt.position - target)
            + reward.d_action * _norm(actions - history[:, 0]) + c.tilt * tilt)
    for threshold, value in ((limits.position_threshold, nxt.position - target),
                             (limits.linear_velocity_threshold, nxt.linear_velocity),
                             (limits.angular_velocity_threshold, nxt.angular_velocity)):
        excess = torch.relu(value.abs() - c.barrier_start * threshold[:, None])
        cost = cost + c.barrier * excess.square().sum(-1)
    out = {"cost": torch.where(alive, cost, 0).sum(), "running": alive.sum(), "terminated": terminated}
    if labels is not None and c.imitation:
        imitation = (actions - labels.to(actions.dtype)).square().mean(-1)
        out["imitation"] = torch.where(alive, imitation, 0).sum()

    keep = alive & ~terminated
    rows = lambda x: keep.reshape(-1, *([1] * (x.dim() - 1)))  # noqa: E731
    out["state"] = State(*(None if getattr(nxt, f) is None else
                           torch.where(rows(getattr(nxt, f)), getattr(nxt, f), getattr(state, f).detach())
                           for f in STATE_FIELDS))
    out["history"] = torch.where(rows(history), torch.cat([actions[:, None], history[:, :-1]], 1), history.detach())
    out["hidden"] = torch.where(rows(hidden), hidden_next, hidden.detach())
    out["alive"] = keep
    groups = transition.observation_groups(params, target, out["state"], out["history"], features)
    out["observations"] = {"policy": groups[0].detach(), "teacher": groups[1].detach()}
    return out
