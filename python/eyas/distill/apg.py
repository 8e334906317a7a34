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

With ``average_decay`` the policy evaluated and exported (`evaluated`) is an exponential moving average of the
weights after each APG step (``torch.optim.swa_utils.AveragedModel``: the first step's weights, then
``avg = decay * avg + (1 - decay) * weights``); Adam keeps stepping the last weights. Why: APG's steps are noisy
(each flies new dynamics), and the held-out error of single iterates jumps by a centimetre between evaluations
while averages of nearby iterates fly better (docs/distillation.md, "Weight averaging").

Why: the student imitates a teacher that sees the dynamics, while it must act before it knows them; imitation
alone leaves it crashing ~2.5x as often as its teacher (docs/distillation.md). The simulator's gradient tells the
student directly how its own actions, under its own uncertainty, lead towards a termination.
"""
from __future__ import annotations

import math
from typing import Iterator, NamedTuple

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from eyas import sim
from eyas.compilation import compile_enabled, compiled_function, freeze_long_lived_objects
from eyas.distill.collect import draw_seed, env_with_dynamics, episode_env, episode_params
from eyas.distill.config import APGConfig
from eyas.distill.distributed import World
from eyas.envs.step import EnvState, Settings, advance, norm, observe
from eyas.model import StudentPolicy, StudentWeights, policy_step
from eyas.sim import fused
from eyas.sim.fused import param_rows
from eyas.teachers import Block, TeacherBank


STATS = ("loss", "cost", "imitation", "terminated", "grad_norm")  # what `AnalyticPolicyGradient.update` reports


class CostWeights(NamedTuple):
    """The APG cost's constant weights (floats, fixed for a run; the step-dependent position weight is a tensor)."""

    tilt: float
    barrier: float
    barrier_start: float
    imitation: bool
    log_cost: bool


def flight_step(w: StudentWeights, s: EnvState, hidden: torch.Tensor, alive: torch.Tensor,
                labels: torch.Tensor | None, noise: torch.Tensor | None, settings: Settings,
                position_weight: torch.Tensor, c: CostWeights) -> dict:
    """One step of every flight, pure (no random draws, no host reads), compiled by `AnalyticPolicyGradient`: the
    student observes the state (`eyas.envs.step.observe`, plus the ``noise`` drawn for it), acts
    (`eyas.model.policy_step`), the env steps (`eyas.envs.step.advance`), and the step's cost is summed over the
    ``alive`` rows. Rows that were not alive, or terminate now, keep their last state, cut from the graph. Returns
    the next ``state`` (its changing fields X, H, C, A, length: `next_state` completes it), ``hidden`` and
    ``alive``, ``terminated`` (rows ending by a termination at this step), the sums ``cost``, ``imitation`` and
    ``running``, and the next state's noise-free ``teacher`` observation rows (detached, for the teachers' next
    labels; the policy's are its first rows)."""
    policy, _ = observe(s, settings)
    obs = policy.T if noise is None else policy.T + noise
    actions, hidden_next = policy_step(w, obs.to(w.w_in.dtype), hidden)
    nxt, out = advance(s, actions, settings)
    terminated = out.terminated & alive
    qx, qy = nxt.X[4], nxt.X[5]
    limit = lambda name: param_rows(s.P, f"mdp.termination.{name}_threshold")  # noqa: E731
    change = [a - b for a, b in zip(nxt.A.unbind(0), s.H[:4].unbind(0))]
    cost = ((param_rows(s.P, "mdp.reward.position") + position_weight) * norm(out.position_error, 1e-12)
            + param_rows(s.P, "mdp.reward.d_action") * norm(change, 1e-12)  # eps: finite gradients at 0
            + c.tilt * (2 * qx * qx + 2 * qy * qy))  # 1 - R_zz
    for threshold, values in ((limit("position"), out.position_error), (limit("linear_velocity"), out.velocity_error),
                              (limit("angular_velocity"), tuple(nxt.X[10:13].unbind(0)))):
        for v in values:
            cost = cost + c.barrier * torch.relu(v.abs() - c.barrier_start * threshold).square()
    # log1p: a row near a crash (a large barrier) steers the step no more than a row that hovers (cost ~ its value
    # below ~0.3, its gradient divided by 1 + cost above): hopeless episodes do not drown the others
    cost = torch.log1p(cost) if c.log_cost else cost
    result = {"cost": torch.where(alive, cost, 0).sum(), "running": alive.sum(), "terminated": terminated}
    if labels is not None and c.imitation:
        imitation = (actions - labels.to(actions.dtype)).square().mean(-1)
        result["imitation"] = torch.where(alive, imitation, 0).sum()
    keep = alive & ~terminated
    kept = nxt.where(keep, s.detached())
    # not returned: the episode's constants (outputs aliasing inputs cost the compiled graph's wrapper a view each per
    # call) and the env's return (no part of APG's cost: its reward terms then drop out of the graph)
    result["state"] = (kept.X, kept.H, kept.C, kept.A, kept.length)
    result["hidden"] = torch.where(keep[:, None], hidden_next, hidden.detach())
    result["alive"] = keep
    result["teacher"] = observe(kept.detached(), settings)[1]
    return result


def next_state(s: EnvState, out: dict) -> EnvState:
    """The state after `flight_step` ``out`` of ``s``: its changing fields from ``out``, the others ``s``'s."""
    X, H, C, A, length = out["state"]
    return s._replace(X=X, H=H, C=C, A=A, length=length)


class Step(NamedTuple):
    """One step of a batch of APG flights (tensors over the batch's rows)."""

    X: torch.Tensor  # (23, n) the packed state before the step (`eyas.sim.fused`)
    labels: torch.Tensor | None  # the teachers' actions on that state (None without the imitation term)
    alive: torch.Tensor  # (n,) bool: the row's episode runs at this step
    terminated: torch.Tensor  # (n,) bool: the row's episode ends by a termination at this step
    sums: dict  # the step's cost sums over running rows (`flight_step`): cost, running, imitation
    last: bool  # the flights' last step (horizon reached, or every row ended)

    @property
    def state(self) -> sim.State:
        """The state before the step as a `sim.State` of (n, ...) views (unpacked on demand, off the hot path)."""
        return fused.unpack_state(self.X)


class AnalyticPolicyGradient:
    """APG fine-tuning of a `StudentPolicy` on the embedded env (see the module docstring)."""

    def __init__(self, student: StudentPolicy, bank: TeacherBank, env_cfg, cfg: APGConfig, *,
                 generator: torch.Generator, device: torch.device | str = "cpu", world: World = World()):
        self.student, self.world = student, world
        self.bank = bank
        self.env_cfg = env_cfg
        self.cfg = cfg
        self._flight_env_cfgs = {name: env_cfg.with_mdp(name) for name in cfg.env or ()}
        self.generator = generator
        self.device = torch.device(device)
        self.optimizer = torch.optim.Adam(student.parameters(), lr=cfg.learning_rate, eps=1e-7)
        self.average = (AveragedModel(student, multi_avg_fn=get_ema_multi_avg_fn(cfg.average_decay))
                        if cfg.average_decay is not None else None)
        world.broadcast_parameters(student)
        self.iteration = 0
        self._frozen = False
        # rows per iteration: one block of teachers, ``per_teacher`` episodes each, cycling through the bank
        self.teachers_per_batch = min(len(bank), cfg.envs)
        self.per_teacher = cfg.envs // self.teachers_per_batch
        self._next_teacher = 0
        # the env's compile setting (PointControlEnvCfg.compile / EYAS_COMPILE) also compiles the flights, with static
        # sizes (the batch is the run's ``envs``): a graph with symbolic sizes tags each of its ~60 saved and returned
        # tensors with its symbolic dimensions on every call, Python work that a static graph skips
        compiled = compile_enabled(getattr(env_cfg, "compile", False))
        self._flight_step = (compiled_function(flight_step, training=True, device=self.device, dynamic=False)
                             if compiled else flight_step)

    @property
    def evaluated(self) -> StudentPolicy:
        """The policy to evaluate and export: the weights' moving average with ``average_decay`` (the last weights
        before the first step), else the student itself."""
        if self.average is None or int(self.average.n_averaged) == 0:
            return self.student
        return self.average.module

    @property
    def flight_env_cfg(self):
        """The env this step's flights fly: the run's, with the MDP of the --apg_env preset whose turn it is
        (`APGConfig.flight_mdp`)."""
        name = self.cfg.flight_mdp(self.iteration)
        return self.env_cfg if name is None else self._flight_env_cfgs[name]

    def _block(self) -> Block:
        first = self._next_teacher
        count = min(self.teachers_per_batch, len(self.bank) - first)
        self._next_teacher = (first + count) % len(self.bank)
        return self.world.part(Block(first, count, self.per_teacher))

    def _episode_env(self, block: Block):
        """The env of ``block``'s new episodes (`collect.episode_env`); with ``registry_share`` > 0 and privileged
        teachers the last rows of each teacher's part fly the registry models in turn instead (drawn after the
        randomised parameters of all rows, so the other rows' draws do not change)."""
        teachers, env_cfg = block.of(self.bank.teachers), self.flight_env_cfg
        keep = round(block.per_teacher * (1 - self.cfg.registry_share))
        if keep == block.per_teacher or any(getattr(t, "params", None) is not None for t in teachers):
            return episode_env(self.bank.teachers, block, env_cfg, self.generator, self.device)
        params = episode_params(self.bank.teachers, block, env_cfg, self.generator)
        rows = torch.arange(block.rows).reshape(block.count, block.per_teacher)[:, keep:].reshape(-1)
        models = sim.Params.cat([sim.model_params(name, params.dtype, "cpu") for name in sim.MODEL_NAMES])
        params.assign_(rows, models[torch.arange(len(rows)) % len(sim.MODEL_NAMES)])  # the models in turn
        return env_with_dynamics(env_cfg, params, draw_seed(self.generator), self.device)

    def fly(self, detach_every: int | None = None) -> Iterator[Step]:
        """Fly one batch of new episodes for ``horizon`` steps with gradients (the student acts, the teachers label;
        no auto-reset: a row that meets a termination condition keeps its last state, cut from the graph). Every
        ``detach_every`` steps the flights' state is cut from the graph (truncated backpropagation)."""
        c = self.cfg
        block = self._block()
        env = self._episode_env(block)
        weights = StudentWeights.of(self.student)
        h0 = self.student.initial_hidden_state
        # rl-tools' gradients leave the initial state fixed (docs/gradients.md); exact ones learn it
        h0 = h0 if self.student.gradient_mode == "exact" else h0.detach()
        s, settings = env.env_state(), env.settings
        hidden = h0.expand(env.num_envs, -1)
        alive = torch.ones(env.num_envs, dtype=torch.bool, device=env.device)
        teacher = observe(s, settings)[1]
        costs = CostWeights(c.tilt_weight, c.barrier_weight, c.barrier_start, c.imitation_weight > 0, c.log_cost)
        steady = [torch.tensor(w, dtype=env.dtype, device=env.device) for w in (0.0, c.steady_weight)]
        self.bank.reset(block)
        for t in range(c.horizon):
            noise = env.observation_noise()
            labels = self.bank.act(_groups(teacher, env, noise), block) if costs.imitation else None
            # step 0 eager: its state needs no gradient, and a second compiled graph for it would double the compile
            out = (self._flight_step if t > 0 else flight_step)(
                weights, s, hidden, alive, labels, noise, settings, steady[t >= c.steady_start], costs)
            last = t + 1 == c.horizon or not bool(out["alive"].any())
            yield Step(s.X, labels, alive, out["terminated"], out, last)
            if last:
                break
            s, hidden, alive, teacher = next_state(s, out), out["hidden"], out["alive"], out["teacher"]
            if detach_every and (t + 1) % detach_every == 0:
                s, hidden = s.detached(), hidden.detach()

    def losses(self) -> Iterator[tuple[torch.Tensor, dict]]:
        """The APG loss of one batch of flights (`fly`), one per window of `window()` steps (one for the whole
        horizon by default), and its parts (detached). The flights carry on across windows with their state cut
        from the graph: each window's loss is differentiated through its own steps only."""
        sums, ended, window = {"cost": 0.0, "imitation": 0.0, "running": 0.0}, None, self.window()
        for t, step in enumerate(self.fly(detach_every=window)):
            for key in sums:
                sums[key] = sums[key] + step.sums.get(key, 0.0)
            ended = step.terminated if ended is None else ended | step.terminated
            if (t + 1) % window == 0 or step.last:
                yield self._window_loss(sums, ended)
                sums = {"cost": 0.0, "imitation": 0.0, "running": 0.0}

    def window(self) -> int:
        """This step's window: ``window`` for the first ``window_steps`` steps (all by default), then the horizon."""
        c = self.cfg
        windowed = c.window is not None and (c.window_steps is None or self.iteration < c.window_steps)
        return c.window if windowed else c.horizon

    def loss(self) -> tuple[torch.Tensor, dict]:
        """The loss of one batch of flights differentiated through the whole horizon (no ``window``)."""
        losses = list(self.losses())
        if len(losses) != 1:
            raise ValueError(f"loss(): {len(losses)} windows; with --apg_window use losses()")
        return losses[0]

    def _window_loss(self, sums: dict, ended: torch.Tensor) -> tuple[torch.Tensor, dict]:
        running_steps = self.world.sum(sums["running"])  # over all ranks' rows (no gradient)
        cost_mean, imitation_mean = sums["cost"] / running_steps, sums["imitation"] / running_steps
        loss = cost_mean + self.cfg.imitation_weight * imitation_mean
        if not self.world.distributed:
            return loss, {"cost": cost_mean.detach(), "imitation": torch.as_tensor(imitation_mean).detach(),
                          "terminated": ended.to(torch.float64).mean()}
        parts = self.world.sum(torch.stack([cost_mean.detach().double(), torch.as_tensor(imitation_mean).detach()
                                            .double().to(cost_mean.device), ended.double().sum(),
                                            torch.tensor(float(len(ended)), dtype=torch.float64,
                                                         device=cost_mean.device)]))
        return loss, {"cost": parts[0], "imitation": parts[1], "terminated": parts[2] / parts[3]}

    def learning_rate(self) -> float:
        """This step's Adam step size: constant, or a cosine from ``learning_rate`` (step 0) to ``learning_rate_final``
        (the last of ``iterations`` steps)."""
        c = self.cfg
        if c.learning_rate_final is None:
            return c.learning_rate
        progress = min(1.0, self.iteration / max(1, c.iterations - 1))
        cosine = (1 + math.cos(math.pi * progress)) / 2
        return c.learning_rate_final + (c.learning_rate - c.learning_rate_final) * cosine

    def update(self) -> dict:
        """One APG step: fly, and per window backpropagate, clip, Adam. Returns floats averaged over the windows:
        loss, cost, imitation, grad_norm; terminated (share of rows ended within the horizon). A window with a
        non-finite loss or gradient is skipped."""
        self.student.train()
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate()
        windows = []
        for loss, parts in self.losses():
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.world.average_gradients(self.student.parameters(), mean=False)  # each rank's part of the mean
            grad_norm = torch.nn.utils.clip_grad_norm_(self.student.parameters(), self.cfg.grad_clip)
            loss = self.world.sum(loss.detach())
            stats = {"loss": float(loss), "grad_norm": float(grad_norm)} | {k: float(v) for k, v in parts.items()}
            stats["skipped"] = not (math.isfinite(stats["loss"]) and math.isfinite(stats["grad_norm"]))
            if not stats["skipped"]:
                self.optimizer.step()
            windows.append(stats)
        self.iteration += 1
        if not self._frozen:  # the flights' graphs exist now (`freeze_long_lived_objects`)
            freeze_long_lived_objects()
            self._frozen = True
        if self.average is not None:
            self.average.update_parameters(self.student)
        stats = {k: sum(w[k] for w in windows) / len(windows) for k in ("loss", "grad_norm", "cost", "imitation")}
        return stats | {"terminated": windows[-1]["terminated"], "skipped": any(w["skipped"] for w in windows)}

    def state_dict(self) -> dict:
        state = {"student": self.student.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "iteration": self.iteration, "next_teacher": self._next_teacher}
        return state | ({"average": self.average.state_dict()} if self.average is not None else {})

    def load_state_dict(self, state: dict) -> None:
        self.student.load_state_dict(state["student"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.iteration = int(state["iteration"])
        self._next_teacher = int(state["next_teacher"])
        if self.average is not None:
            self.average.load_state_dict(state["average"])


def _groups(teacher: torch.Tensor, env, noise: torch.Tensor | None) -> dict:
    """The observation groups of noise-free teacher rows, as the env hands them out (the policy's with ``noise``)."""
    policy = teacher[:env.num_obs].T
    groups = {"policy": policy if noise is None else policy + noise, "teacher": teacher[:env.num_teacher_obs].T}
    return groups | ({"privileged": teacher.T} if env.cfg.privileged else {})
