"""Analytic policy gradients (APG): fine-tune the student by backpropagating through the simulator.

Not part of rl-tools' post-training; `eyas distill --apg_iterations N` runs it after the distillation epochs, on
the distilled best actor. The embedded simulator (`eyas.sim`, the l2f port) is written in torch, so the cost of a
flight can be differentiated through the dynamics, the GRU and back to the student's weights.

One iteration flies ``envs`` new episodes for ``horizon`` steps, from the initial-state distribution and the
dynamics the collection uses (each teacher's own parameters, or fresh RAPTOR-randomised ones for privileged
teachers), with the student acting; every teacher labels the states its rows visit. Per step and running row:

    cost  = w_p |p - target| + w_da |a - a_prev|          l2f's position and action-change terms (RAPTOR weights)
          + tilt_weight (1 - R_zz)                        smooth stand-in for l2f's orientation term (an acos,
                                                          whose gradient is unbounded at zero)
          + barrier_weight sum_i relu(|x_i| - barrier_start * threshold_x)^2
                                                          for x = position, linear and angular velocity: rises
                                                          before l2f's termination thresholds are reached
          + imitation_weight |a - a_teacher|^2 / 4        the distillation loss on the student's own states
          + steady_weight |p - target|  (step >= steady_start)  optional: the steady state, what evaluation measures

A row that meets a termination condition stops there (its later steps neither cost nor pass gradients). The loss
is the mean cost over running rows and steps; its gradient (clipped to ``grad_clip`` in norm) drives Adam.
Under torchrun (``world``) each rank flies its `World.part` of the iteration's rows; its loss is its cost sum over
the running steps of all ranks and the gradients are summed over ranks, which gives every rank the gradient of
the mean over all rows.

Why: the student imitates a teacher that sees the dynamics, while it must act before it knows them; imitation
alone leaves it crashing ~2.5x as often as its teacher (docs/distillation.md). The simulator's gradient tells the
student directly how its own actions, under its own uncertainty, lead towards a termination.
"""
from __future__ import annotations

import math
from typing import Iterator, NamedTuple

import torch

from eyas import sim
from eyas.distill.collect import episode_env
from eyas.distill.config import APGConfig
from eyas.distill.distributed import World
from eyas.model import StudentPolicy
from eyas.teachers import Block, TeacherBank


STATS = ("loss", "cost", "imitation", "terminated", "grad_norm")  # what `AnalyticPolicyGradient.update` reports


class Step(NamedTuple):
    """One step of a batch of APG flights (tensors over the batch's rows)."""

    env: object  # the `PointControlEnv` whose rows are flown (dynamics, thresholds, target)
    state: sim.State  # before the step
    next_state: sim.State
    actions: torch.Tensor  # the student's, with gradients
    previous_actions: torch.Tensor
    labels: torch.Tensor | None  # the teachers' actions on ``state`` (None without the imitation term)
    alive: torch.Tensor  # (n,) bool: the row's episode runs at this step
    terminated: torch.Tensor  # (n,) bool: the row's episode ends by a termination at this step


class AnalyticPolicyGradient:
    """APG fine-tuning of a `StudentPolicy` on the embedded env (see the module docstring)."""

    def __init__(self, student: StudentPolicy, bank: TeacherBank, env_cfg, cfg: APGConfig, *,
                 generator: torch.Generator, device: torch.device | str = "cpu", world: World = World()):
        self.student, self.world = student, world
        self.bank = bank
        self.env_cfg = env_cfg
        self.cfg = cfg
        self.generator = generator
        self.device = torch.device(device)
        self.optimizer = torch.optim.Adam(student.parameters(), lr=cfg.learning_rate, eps=1e-7)
        world.broadcast_parameters(student)
        self.iteration = 0
        # rows per iteration: one block of teachers, ``per_teacher`` episodes each, cycling through the bank
        self.teachers_per_batch = min(len(bank), cfg.envs)
        self.per_teacher = cfg.envs // self.teachers_per_batch
        self._next_teacher = 0

    def _block(self) -> Block:
        first = self._next_teacher
        count = min(self.teachers_per_batch, len(self.bank) - first)
        self._next_teacher = (first + count) % len(self.bank)
        return self.world.part(Block(first, count, self.per_teacher))

    def fly(self) -> Iterator[Step]:
        """Fly one batch of new episodes for ``horizon`` steps with gradients (the student acts, the teachers label;
        no auto-reset: a row that meets a termination condition keeps its last state, cut from the graph)."""
        c = self.cfg
        block = self._block()
        env = episode_env(self.bank.teachers, block, self.env_cfg, self.generator, self.device)
        state, history = env.state, env.action_history
        alive = torch.ones(env.num_envs, dtype=torch.bool, device=env.device)
        hidden = None
        self.bank.reset(block)
        for _ in range(c.horizon):
            obs = env.observe(state, history)
            actions, hidden = self.student.act(obs["policy"].to(self.student.initial_hidden_state.dtype), hidden)
            labels = self.bank.act(obs, block) if c.imitation_weight > 0 else None
            actions = actions.to(env.dtype)
            nxt = sim.step(state, actions, env.params, validate=False)
            terminated = torch.stack(list(env.termination_terms(nxt).values())).any(0)
            yield Step(env, state, nxt, actions, history[:, 0], labels, alive, terminated & alive)
            alive = alive & ~terminated
            state = _where(alive, nxt, state)
            history = torch.where(alive[:, None, None], torch.cat([actions[:, None], history[:, :-1]], 1),
                                  history.detach())
            if not bool(alive.any()):
                break

    def loss(self) -> tuple[torch.Tensor, dict]:
        """The APG loss of one batch of flights (`fly`) and its parts (detached)."""
        c = self.cfg
        cost_sum = imitation_sum = running_steps = 0.0
        ended = None
        for t, step in enumerate(self.fly()):
            reward, limits, target = step.env.params.mdp.reward, step.env.params.mdp.termination, step.env.target
            nxt, actions = step.next_state, step.actions
            tilt = 1 - sim.quaternion_to_rotation_matrix(nxt.orientation)[:, 2, 2]
            position_weight = reward.position + (c.steady_weight if t >= c.steady_start else 0.0)
            cost = (position_weight * _norm(nxt.position - target)
                    + reward.d_action * _norm(actions - step.previous_actions) + c.tilt_weight * tilt)
            for threshold, value in ((limits.position_threshold, nxt.position - target),
                                     (limits.linear_velocity_threshold, nxt.linear_velocity),
                                     (limits.angular_velocity_threshold, nxt.angular_velocity)):
                excess = torch.relu(value.abs() - c.barrier_start * threshold[:, None])
                cost = cost + c.barrier_weight * excess.square().sum(-1)
            cost_sum = cost_sum + torch.where(step.alive, cost, 0).sum()
            if step.labels is not None:
                imitation = (actions - step.labels.to(actions.dtype)).square().mean(-1)
                imitation_sum = imitation_sum + torch.where(step.alive, imitation, 0).sum()
            running_steps = running_steps + step.alive.sum()
            ended = step.terminated if ended is None else ended | step.terminated
        running_steps = self.world.sum(running_steps)  # over all ranks' rows (no gradient)
        cost_mean, imitation_mean = cost_sum / running_steps, imitation_sum / running_steps
        loss = cost_mean + c.imitation_weight * imitation_mean
        if not self.world.distributed:
            return loss, {"cost": cost_mean.detach(), "imitation": torch.as_tensor(imitation_mean).detach(),
                          "terminated": ended.to(torch.float64).mean()}
        parts = self.world.sum(torch.stack([cost_mean.detach().double(), torch.as_tensor(imitation_mean).detach()
                                            .double().to(cost_mean.device), ended.double().sum(),
                                            torch.tensor(float(len(ended)), dtype=torch.float64,
                                                         device=cost_mean.device)]))
        return loss, {"cost": parts[0], "imitation": parts[1], "terminated": parts[2] / parts[3]}

    def update(self) -> dict:
        """One APG step: fly, backpropagate, clip, Adam. Returns floats: loss, cost, imitation, terminated (share
        of rows ended within the horizon), grad_norm. A non-finite loss or gradient skips the step."""
        self.student.train()
        loss, parts = self.loss()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.world.average_gradients(self.student.parameters(), mean=False)  # each rank's part of the mean
        grad_norm = torch.nn.utils.clip_grad_norm_(self.student.parameters(), self.cfg.grad_clip)
        loss = self.world.sum(loss.detach())
        stats = {"loss": float(loss.detach()), "grad_norm": float(grad_norm)} | {k: float(v) for k, v in parts.items()}
        finite = math.isfinite(stats["loss"]) and math.isfinite(stats["grad_norm"])
        if finite:
            self.optimizer.step()
        stats["skipped"] = not finite
        self.iteration += 1
        return stats

    def state_dict(self) -> dict:
        return {"student": self.student.state_dict(), "optimizer": self.optimizer.state_dict(),
                "iteration": self.iteration, "next_teacher": self._next_teacher}

    def load_state_dict(self, state: dict) -> None:
        self.student.load_state_dict(state["student"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.iteration = int(state["iteration"])
        self._next_teacher = int(state["next_teacher"])


def _norm(x: torch.Tensor) -> torch.Tensor:
    """Euclidean norm over the last axis with a finite gradient at 0."""
    return (x.square().sum(-1) + 1e-12).sqrt()


def _where(mask: torch.Tensor, new: sim.State, old: sim.State) -> sim.State:
    """Rows of ``new`` where ``mask``, else the rows of ``old`` detached."""
    def pick(a, b):
        if a is None:
            return None
        return torch.where(mask.reshape(-1, *([1] * (a.dim() - 1))), a, b.detach())
    return sim.State(*(pick(getattr(new, f), getattr(old, f)) for f in
                       ("position", "orientation", "linear_velocity", "angular_velocity", "rpm", "force", "torque")))
