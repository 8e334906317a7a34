"""One step of an APG flight as one pure function, so torch.compile can fuse it (forward and backward) into a few
loops; `eyas.distill.apg` calls it eager or compiled (the env's compile setting), the same code either way.

`flight_step` maps (state, action history, GRU state, alive mask, the teachers' labels) to the next ones and the
step's cost sums: the student's observation (`eyas.envs.transition.policy_rows`, plus the noise drawn for it
outside), the student's step (`student_step`: Dense+ReLU, GRU cell, Dense, as `StudentPolicy` computes it, without
its input checks, which would break the graph), l2f's RK4 step on packed rows (`eyas.sim.fused`, as the env steps),
the termination terms, the APG cost (`eyas.distill.apg`), the masked update of finished rows, and the next state's
observation groups (detached, for the teachers' labels of the next step). It draws no random numbers and reads
nothing on the host.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from eyas.envs import transition
from eyas.model import StudentPolicy
from eyas.sim import fused
from eyas.sim.fused import param_rows
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


def flight_step(w: StudentWeights, X: torch.Tensor, history: torch.Tensor, hidden: torch.Tensor, alive: torch.Tensor,
                labels: torch.Tensor | None, noise: torch.Tensor | None, P: torch.Tensor, target: torch.Tensor,
                features: torch.Tensor, position_weight: torch.Tensor, c: CostWeights) -> dict:
    """One step of every row (see the module docstring) on the env's packed rows: state ``X`` (23, B) and
    parameters ``P`` (145, B) (`eyas.sim.fused`); ``history`` (B, 4 H) the previous actions, most recent first;
    ``features`` (48, B). Returns the next ``X``, ``history``, ``hidden`` and ``alive`` (finished rows keep their
    last values, detached), ``terminated`` (rows ending by a termination at this step), the step's sums over running
    rows ``cost``, ``imitation`` and ``running``, and the next state's noise-free ``observations`` (detached groups
    ``policy`` and ``teacher``, (B, n), for the teachers' next labels)."""
    x = tuple(X.unbind(0))
    obs = torch.cat([fused.stack_rows(transition.policy_rows(x, target)), history], -1)
    if noise is not None:
        obs = obs + noise
    actions, hidden_next = student_step(w, obs.to(w.w_in.dtype), hidden)
    actions = actions.to(X.dtype)
    nxt = fused.step_rows(x, tuple(actions.unbind(-1)), fused.dynamics_rows(P))
    terms = transition.termination_rows(nxt, P, target)
    terminated = (terms[0] | terms[1] | terms[2] | terms[3] | terms[4]) & alive

    reward = lambda name: param_rows(P, "mdp.reward." + name)  # noqa: E731
    limit = lambda name: param_rows(P, f"mdp.termination.{name}_threshold")  # noqa: E731
    qx, qy = nxt[4], nxt[5]
    tilt = 2 * qx * qx + 2 * qy * qy  # 1 - R_zz
    change = [a - b for a, b in zip(actions.unbind(-1), history[:, :4].unbind(-1))]
    relative = [nxt[k] - target[k] for k in range(3)]
    cost = ((reward("position") + position_weight) * transition.norm(relative, 1e-12)  # eps: finite gradient at 0
            + reward("d_action") * transition.norm(change, 1e-12) + c.tilt * tilt)
    for threshold, values in ((limit("position"), relative), (limit("linear_velocity"), nxt[7:10]),
                              (limit("angular_velocity"), nxt[10:13])):
        for v in values:
            cost = cost + c.barrier * torch.relu(v.abs() - c.barrier_start * threshold).square()
    out = {"cost": torch.where(alive, cost, 0).sum(), "running": alive.sum(), "terminated": terminated}
    if labels is not None and c.imitation:
        imitation = (actions - labels.to(actions.dtype)).square().mean(-1)
        out["imitation"] = torch.where(alive, imitation, 0).sum()

    keep = alive & ~terminated
    out["X"] = torch.where(keep, torch.stack(nxt), X.detach())
    out["history"] = torch.where(keep[:, None], torch.cat([actions, history[:, :-4]], -1), history.detach())
    out["hidden"] = torch.where(keep[:, None], hidden_next, hidden.detach())
    out["alive"] = keep
    policy, teacher = transition.observation_rows(out["X"].detach(), P, out["history"].detach().T, features, target)
    out["observations"] = {"policy": policy.T, "teacher": teacher.T}
    return out
