"""Evaluators of a distillation run: fixed held-out episodes (randomised dynamics and every registry model) on the
embedded env, or new episodes of an Isaac Lab task; and a few recorded flights for the plots. All fly through
`eyas.envs.rollout` and report `EpisodeStats.summary()` per group. Under torchrun (``world``) each rank flies a
contiguous share of the episodes and the statistics are gathered, so every rank reports the same figures."""
from __future__ import annotations

import torch

from eyas.distill.collect import env_dtype, env_with_dynamics
from eyas.distill.dataset import DistillationError
from eyas.distill.distributed import World
from eyas.envs.rollout import EpisodeStats, PolicyFn, evaluate, rollout, student_policy_fn
from eyas.model import StudentPolicy


def fixed_dynamics_env(env_cfg, parts: list, seed: int, device):
    """A `PointControlEnv` with one row per parameter set of ``parts`` (`eyas.sim.Params` batches), in order."""
    from eyas import sim

    return env_with_dynamics(env_cfg, sim.Params.stack(parts), seed, device)


class Evaluator:
    """Held-out randomised dynamics plus registry models in one batched env (one episode per row).
    The dynamics and initial states are fixed (seeded), so epochs are compared on the same flights. Under torchrun
    rank r flies its rows of the same dynamics with initial states of its own seed (`World.rank_seed`)."""

    held_out = "randomized"

    def __init__(self, env_cfg, *, randomized: int, per_model: int, models: list[str], seed: int, device,
                 world: World = World()):
        from eyas import sim

        g = torch.Generator().manual_seed(seed)
        dtype = env_dtype(env_cfg)
        parts, self.groups = [], []
        if randomized > 0:
            parts.append(sim.sample_domain_randomized_params(randomized, g, env_cfg.domain_randomization,
                                                             dtype=dtype, device="cpu"))
            self.groups.append(("randomized", 0, randomized))
        start = randomized
        for name in models if per_model > 0 else []:
            parts.append(sim.model_params(name, dtype=dtype).expand(per_model))
            self.groups.append((name, start, start + per_model))
            start += per_model
        if not parts:
            raise DistillationError("evaluation needs eval_episodes > 0 or eval_registry_episodes > 0")
        self.world, self.seed = world, world.rank_seed(seed)
        if world.distributed:
            start, stop = world.rows(start)
            parts = [sim.Params.stack(parts)[start:stop]]
        self.env = fixed_dynamics_env(env_cfg, parts, self.seed, device)

    @torch.no_grad()
    def __call__(self, student: StudentPolicy, per_episode: bool = False) -> dict[str, dict]:
        return self.evaluate_fn(student_policy_fn(student), per_episode)

    @torch.no_grad()
    def evaluate_fn(self, policy_fn: PolicyFn, per_episode: bool = False) -> dict[str, dict]:
        """Evaluate ``policy_fn(obs, reset_mask) -> actions``: `EpisodeStats.summary(per_episode)` per group."""
        stats = evaluate(policy_fn, self.env, num_episodes=self.env.num_envs, seed=self.seed)
        if self.world.distributed:
            stats = EpisodeStats.concat(self.world.all_gather(stats))
        return {name: stats[a:b].summary(per_episode) for name, a, b in self.groups}


class TaskEvaluator:
    """Evaluation on an Isaac Lab task: ``episodes`` new episodes (one per row, in chunks of the task's rows),
    reported as the group ``"task"``. The task draws the dynamics and initial states itself."""

    held_out = "task"

    def __init__(self, task, *, episodes: int, world: World = World()):
        if episodes < 1:
            raise DistillationError("evaluation needs --eval_episodes > 0 on an Isaac Lab task")
        self.task, self.episodes, self.groups = task, int(episodes), [("task", 0, int(episodes))]
        self.world = world

    @torch.no_grad()
    def __call__(self, student: StudentPolicy) -> dict[str, dict]:
        return self.evaluate_fn(student_policy_fn(student))

    @torch.no_grad()
    def evaluate_fn(self, policy_fn: PolicyFn) -> dict[str, dict]:
        start, stop = self.world.rows(self.episodes)
        parts, left = [], stop - start
        while left > 0:
            env = self.task.episodes(min(left, self.task.num_envs))
            parts.append(rollout(env, policy_fn, reset=False))
            left -= env.num_envs
        stats = EpisodeStats.concat(parts)
        if self.world.distributed:
            stats = EpisodeStats.concat(self.world.all_gather(stats))
        return {"task": stats.summary()}


def raptor_policy(caps, num_obs: int, num_actions: int, device) -> StudentPolicy | None:
    """The released RAPTOR policy (foundation-policy package), the reference every student is judged against,
    when it can fly the run's env (the embedded l2f env, 22 observations, 4 actions); else None."""
    from eyas.rltools_h5 import RLToolsH5Error, load_rltools_h5, raptor_checkpoint_path

    if not caps.l2f_observation or (num_obs, num_actions) != (22, 4):
        return None
    try:
        return load_rltools_h5(raptor_checkpoint_path()).to(device).eval()
    except (ImportError, OSError, RLToolsH5Error):
        return None


def teacher_policy_fn(teacher) -> PolicyFn:
    """A rollout policy for a teacher (recurrent ones reset where episodes start)."""
    if getattr(teacher, "is_recurrent", False):
        return student_policy_fn(teacher.policy, obs_group=teacher.obs_group)
    return lambda obs, reset_mask: teacher.act(teacher.select(obs))


def record_flights(student: StudentPolicy, env_cfg, device, seed: int, models=("crazyflie",), randomized: int = 3):
    """A few recorded flights (positions, actions, ...) of ``student``: randomised dynamics and registry models."""
    from eyas import sim

    g = torch.Generator().manual_seed(seed)
    dtype = env_dtype(env_cfg)
    parts = [sim.sample_domain_randomized_params(randomized, g, env_cfg.domain_randomization, dtype=dtype, device="cpu")]
    parts += [sim.model_params(m, dtype=dtype) for m in models]
    labels = [f"randomized {i}" for i in range(randomized)] + list(models)
    env = fixed_dynamics_env(env_cfg, parts, seed, device)
    stats = evaluate(student_policy_fn(student), env, num_episodes=env.num_envs, record_envs=env.num_envs, seed=seed)
    return [{"label": label, "return": float(stats.returns[i]), "terminated": bool(stats.terminated[i]),
             **{k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in traj.items()}}
            for i, (label, traj) in enumerate(zip(labels, stats.trajectories))]
