"""Evaluators of a distillation run: fixed held-out episodes (randomised dynamics and every registry model) on the
embedded env, or new episodes of an Isaac Lab task; and a few recorded flights for the plots. All fly through
`eyas.envs.rollout` and report `EpisodeStats.summary()` per group. Under torchrun (``world``) each rank flies a
contiguous share of the episodes and the statistics are gathered, so every rank reports the same figures."""
from __future__ import annotations

import math

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


POSITION_ERROR_TOLERANCE = (0.05, 0.002)  # relative, absolute [m]: what counts as "not worse" on the same episodes
# a group that holds position within this share of the reference's (RAPTOR's) error there is doing the task twice
# as well as the reference: moves below it do not count against a candidate (sub-cm errors on the models APG flies
# swing by more than the band from one evaluation to the next, and would otherwise freeze the choice early)
REFERENCE_SHARE = 0.5
NEW_BEST = "new best"  # `accepts`' reason for an accepted candidate (the runner finds accepted rows by it)


def accepts(candidate: dict[str, dict], accepted: dict[str, dict] | list[dict[str, dict]], held_out: str,
            reference: dict[str, dict] | None = None) -> tuple[bool, str]:
    """The best-actor rule of the APG phase: a candidate evaluation replaces the best one (the last of the
    ``accepted`` evaluations; one evaluation: the best alone) when its ``held_out`` final position error is lower (on
    the episodes both completed) **and** no group (held-out randomised dynamics or any registry model) is worse than
    at *any* accepted evaluation: no more terminated episodes, and a final position error not above that
    evaluation's by more than 5 % (or 0.2 cm, whichever is larger) unless it stays below ``REFERENCE_SHARE`` of the
    ``reference`` policy's error on that group (RAPTOR on the same episodes, when given). Comparing with every
    accepted evaluation, not only the last, keeps a group from creeping upwards by steps each within the tolerance.
    All evaluations fly the same episodes, so a difference is the policy's, not sampling noise; where they carry
    per-episode results (`EpisodeStats.summary(per_episode=True)`), the position errors are compared on the episodes
    both flew to the end (a policy that survives an episode the other does not is not charged for holding it less
    well). Returns (accepted, the reason in a few words)."""
    accepted = [accepted] if isinstance(accepted, dict) else list(accepted)
    worse = []
    for earlier in accepted:
        worse += [w for w in _worse_groups(candidate, earlier, reference) if w not in worse]
    if worse:
        return False, "kept the best: worse on " + ", ".join(worse)
    error, best_error = _paired_errors(candidate[held_out], accepted[-1][held_out])
    if not error < best_error:  # position error is what a point-control policy is for (return also pays the approach)
        return False, "kept the best: no lower position error"
    return True, NEW_BEST


def _worse_groups(candidate: dict[str, dict], best: dict[str, dict], reference: dict[str, dict] | None) -> list[str]:
    """The groups on which ``candidate`` is worse than ``best`` by `accepts`' terms."""
    worse = []
    for group, b in best.items():
        c = candidate[group]
        if round(c["share_terminated"] * c["episodes"]) > round(b["share_terminated"] * b["episodes"]):
            worse.append(f"{group} terminations")
        error, limit = _paired_errors(c, b)
        if limit is not None and limit == limit:  # NaN: every best episode terminated, nothing to hold
            held = reference is not None and error < REFERENCE_SHARE * reference[group]["position_error_mean"]
            if not held and not error <= limit + max(POSITION_ERROR_TOLERANCE[0] * limit, POSITION_ERROR_TOLERANCE[1]):
                worse.append(f"{group} position error")
    return worse


def _paired_errors(candidate: dict, best: dict) -> tuple[float | None, float | None]:
    """(candidate's, best's) mean final position error: over the episodes neither terminated when both carry
    per-episode results, else their own means."""
    if "per_episode" not in candidate or "per_episode" not in best:
        return candidate.get("position_error_mean"), best.get("position_error_mean")
    c, b = candidate["per_episode"], best["per_episode"]
    both = [i for i, (tc, tb) in enumerate(zip(c["terminated"], b["terminated"])) if not tc and not tb]
    if not both:
        return math.nan, math.nan
    mean = lambda errors: sum(errors[i] for i in both) / len(both)  # noqa: E731
    return mean(c["position_error"]), mean(b["position_error"])


def raptor_policy(embedded: bool, num_obs: int, num_actions: int, device) -> StudentPolicy | None:
    """The released RAPTOR policy (foundation-policy package), the reference every student is judged against,
    when it can fly the run's env (the embedded l2f env, 22 observations, 4 actions); else None."""
    from eyas.rltools_h5 import RLToolsH5Error, load_rltools_h5, raptor_checkpoint_path

    if not embedded or (num_obs, num_actions) != (22, 4):
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
