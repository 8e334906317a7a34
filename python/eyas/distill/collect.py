"""Data collection for distillation: teachers or the student fly, teachers label every visited state.

Mirrors rl-tools' post-training (`gather_epoch`, `sample_trajectories`, `add_to_dataset` in
src/foundation_policy/post_training/helper.h):

* every teacher gets ``num_episodes`` episodes per epoch on its own dynamics (`Teacher.params`; a teacher without
  parameters, trained over randomised dynamics, gets a fresh RAPTOR-randomised parameter set per episode);
* the actor is the deterministic teacher (teacher forcing) or the student, whose hidden state starts every episode
  at its initial state; the student acts on the raw observation;
* each stored step holds the student's observation, with the position corrected by the teacher's steady-state
  position offset, and the teacher's deterministic action on the same state; an episode's last step
  (termination or the step limit) is flagged ``truncated``.

Episodes of many teachers run in one batched environment (teacher-major rows, `eyas.teachers.Block`), in blocks of
at most ``num_envs`` rows, through the one episode loop `eyas.envs.rollout` (one episode per row). Under torchrun
(``world``) each rank flies its `World.part` of the teachers x episodes and the per-teacher statistics (and
position offsets) are combined over ranks, so every rank returns the same figures.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from eyas.distill.dataset import DistillationError, EpisodeDataset
from eyas.distill.distributed import World
from eyas.envs.backend import Capabilities, capabilities
from eyas.envs.rollout import EpisodeStats, rollout
from eyas.teachers import Block, TeacherBank, teacher_label

SYNC_EVERY = 16  # steps between checks for the end of a block's episodes (each check synchronises a GPU)


def check_teachers_against_env(teachers: Sequence, env, caps: Capabilities) -> None:
    """Raise `DistillationError` naming the first teacher that cannot read ``env``'s observations, or whose own
    dynamics the backend (``caps``) cannot fly."""
    from eyas.teachers import TeacherError, check_teacher_env

    for i, t in enumerate(teachers):
        try:
            check_teacher_env(t, env)
        except TeacherError as e:
            raise DistillationError(f"teacher {i} ({teacher_label(t)}) does not fit the environment: {e}") from e
        params = getattr(t, "params", None)
        if params is not None and not caps.fixed_dynamics:
            raise DistillationError(f"teacher {i} ({teacher_label(t)}) was trained on fixed dynamics (one teacher per "
                                    f"dynamics set), but the {caps.name} env draws its own dynamics; per-dynamics "
                                    f"teachers need the embedded env (--env_backend embedded)")
        if params is not None and params.batch_size != 1:
            raise DistillationError(f"teacher {i} ({teacher_label(t)}) carries {params.batch_size} dynamics "
                                    f"parameter sets; expected one (RAPTOR: one teacher per dynamics set)")


# ---------------------------------------------------------------------------------------------- environments
def episode_params(teachers: Sequence, block: Block, env_cfg, generator: torch.Generator):
    """`eyas.sim.Params` for ``block.rows`` rows: each teacher's own parameters, or fresh randomised ones (RAPTOR's
    sampler, `env_cfg.domain_randomization`) for teachers without parameters."""
    from eyas import sim

    dtype = env_dtype(env_cfg)
    parts = []
    for t in block.of(teachers):
        params = getattr(t, "params", None)
        if params is None:
            parts.append(sim.sample_domain_randomized_params(block.per_teacher, generator,
                                                             env_cfg.domain_randomization, dtype=dtype, device="cpu"))
        else:
            parts.append(params.to("cpu", dtype).expand(block.per_teacher))
    return sim.Params.stack(parts)


def env_dtype(env_cfg) -> torch.dtype:
    return getattr(torch, env_cfg.dtype) if isinstance(env_cfg.dtype, str) else env_cfg.dtype


def env_with_dynamics(env_cfg, params, seed: int, device: torch.device | str):
    """A `PointControlEnv` of ``env_cfg`` with fixed per-row dynamics ``params`` (one row per parameter set)."""
    from eyas.envs import PointControlEnv

    cfg = dataclasses.replace(env_cfg, num_envs=params.batch_size, dynamics=params.to(device), seed=int(seed),
                              device=str(device))
    return PointControlEnv(cfg)


def episode_env(teachers: Sequence, block: Block, env_cfg, generator: torch.Generator, device: torch.device | str):
    """Rows for ``block``'s new episodes: the env on each teacher's dynamics (a backend that flies fixed dynamics),
    or the first rows of a task that draws its own (an Isaac Lab task, `eyas.envs.isaaclab_task.IsaacLabTask`)."""
    if not capabilities(env_cfg).fixed_dynamics:
        return env_cfg.episodes(block.rows)
    params = episode_params(teachers, block, env_cfg, generator)
    return env_with_dynamics(env_cfg, params, draw_seed(generator), device)


def new_episodes(env_cfg, rows: int, device):
    """``rows`` rows of the run's env starting new episodes now (what probes a run's widths and episode length)."""
    if not capabilities(env_cfg).fixed_dynamics:
        return env_cfg.episodes(rows)
    from eyas.envs import PointControlEnv

    return PointControlEnv(dataclasses.replace(env_cfg, num_envs=rows, device=str(device)))


def draw_seed(generator: torch.Generator) -> int:
    return int(torch.randint(0, 2**62, (1,), generator=generator))


# ---------------------------------------------------------------------------------------------- one block
class TeacherLabels:
    """`rollout` step hook for a block: the teachers' labels of every step (``labels``, also what a teacher-forcing
    policy plays), the student's stored observations and targets (``record``), and each row's true position summed
    over steps [start, end) of ``offset_window`` while its episode runs (steady-state estimation)."""

    def __init__(self, env, bank: TeacherBank, block: Block, *, record: bool,
                 position_offsets: torch.Tensor | None = None, offset_window: tuple[int, int] | None = None):
        n, device = env.num_envs, env.device
        if n != block.rows:
            raise ValueError(f"env has {n} rows, expected {block.count} teachers x {block.per_teacher} episodes")
        self.env, self.bank, self.block, self.window, self.record = env, bank, block, offset_window, record
        self.observations = self.targets = None  # (steps, n, width), allocated at the first step
        self.offset_rows = (None if position_offsets is None else
                            position_offsets.to(device, torch.float32).repeat_interleave(block.per_teacher, 0))
        self.position_sum = torch.zeros(n, 3, dtype=torch.float64, device=device) if offset_window else None
        self.position_count = torch.zeros(n, dtype=torch.long, device=device) if offset_window else None
        self.labels = None
        bank.reset(block)

    def __call__(self, t: int, obs, running: torch.Tensor) -> None:
        self.labels = labels = self.bank.act(obs, self.block)
        bad = ~torch.isfinite(labels).all(-1) & running
        if bool(bad.any()):
            teacher = self.block.teacher_of_row(int(bad.nonzero()[0, 0]))
            raise DistillationError(f"teacher {teacher} ({teacher_label(self.bank.teachers[teacher])}) produced "
                                    f"non-finite actions (NaN/inf) at step {t} of an episode")
        if self.record:
            if t == 0:
                steps, n = int(self.env.max_episode_length), self.env.num_envs
                self.observations = torch.zeros(steps, n, obs["policy"].shape[-1], device=self.env.device)
                self.targets = torch.zeros(steps, n, self.bank.num_actions, device=self.env.device)
            student_obs = obs["policy"].to(torch.float32)
            if self.offset_rows is not None:
                student_obs = torch.cat([student_obs[:, :3] - self.offset_rows, student_obs[:, 3:]], -1)
            self.observations[t], self.targets[t] = student_obs, labels
        if self.window is not None and self.window[0] <= t < self.window[1]:
            position = self.env.relative_position.to(torch.float64)
            self.position_sum += position * running[:, None]
            self.position_count += running

    def teacher_policy(self, obs, reset_mask: torch.Tensor) -> torch.Tensor:
        return self.labels


def fly_block(env, bank: TeacherBank, block: Block, *, student=None, **labels_kwargs) -> tuple[EpisodeStats,
                                                                                             TeacherLabels]:
    """One episode in every row of ``env`` (rows as ``block`` lays them out): the deterministic teacher acts unless
    ``student`` is given; the teachers label every step (`TeacherLabels`, which takes ``labels_kwargs``)."""
    labels = TeacherLabels(env, bank, block, **labels_kwargs)
    if student is None:
        policy = labels.teacher_policy
    else:
        student.reset(batch_size=env.num_envs, device=env.device)
        policy = lambda obs, reset_mask: student(obs["policy"].to(torch.float32))  # noqa: E731
    stats = rollout(env, policy, on_step=labels, reset=False, sync_every=SYNC_EVERY, position_errors=False)
    return stats, labels


# ---------------------------------------------------------------------------------------------- epochs
@dataclass
class TeacherStats:
    """Per-teacher episode statistics of one collection (CPU tensors, one entry per teacher)."""

    mean_return: torch.Tensor
    mean_length: torch.Tensor
    share_terminated: torch.Tensor

    @classmethod
    def combine(cls, parts: list[tuple[Block, "TeacherStats"]], num_teachers: int) -> "TeacherStats":
        """Statistics over every rank's `World.part` (``parts`` = [(part, its stats), ...]): per teacher, the mean
        of the parts' means weighted by their episodes (one part: unchanged)."""
        if len(parts) == 1:
            return parts[0][1]
        sums = torch.zeros(3, num_teachers, dtype=torch.float64)
        weights = torch.zeros(num_teachers, dtype=torch.float64)
        for part, stats in parts:
            rows = slice(part.first, part.first + part.count)
            for i, values in enumerate((stats.mean_return, stats.mean_length, stats.share_terminated)):
                sums[i, rows] += part.per_teacher * values.double()
            weights[rows] += part.per_teacher
        return cls(*(sums / weights))

    @classmethod
    def of_blocks(cls, parts: list[tuple[EpisodeStats, Block]]) -> "TeacherStats":
        """Statistics of flown blocks ``parts`` = [(stats, block), ...] in teacher order."""
        r, l, t = zip(*((s.returns.view(b.count, b.per_teacher).mean(1),
                         s.lengths.view(b.count, b.per_teacher).double().mean(1),
                         s.terminated.view(b.count, b.per_teacher).double().mean(1)) for s, b in parts))
        return cls(torch.cat(r), torch.cat(l), torch.cat(t))

    def summary(self) -> dict:
        """rl-tools' aggregate: mean over teachers of the per-teacher means, and their std."""
        r, l = self.mean_return.double(), self.mean_length.double()
        return {
            "return_mean": float(r.mean()),
            "return_std": float(math.sqrt(max(float((r * r).mean() - r.mean() ** 2), 0.0))),
            "episode_length_mean": float(l.mean()),
            "episode_length_std": float(math.sqrt(max(float((l * l).mean() - l.mean() ** 2), 0.0))),
            "share_terminated": float(self.share_terminated.double().mean()),
        }


def blocks(part: Block, max_rows: int) -> Iterator[Block]:
    """``part``'s teachers and episodes in blocks of at most ``max_rows`` rows (at least one teacher each)."""
    for b in Block.covering(part.count, part.per_teacher, max_rows):
        yield Block(part.first + b.first, b.count, b.per_teacher)


def collect(bank: TeacherBank, env_cfg, *, num_episodes: int, num_envs: int, generator: torch.Generator,
            device: torch.device | str, student=None, position_offsets: torch.Tensor | None = None,
            dataset: EpisodeDataset | None = None, world: World = World()) -> TeacherStats:
    """One epoch's data: ``num_episodes`` episodes per teacher (this rank's `World.part` of them), flown by the
    teachers (``student=None``) or the student, appended to ``dataset`` teacher by teacher. Returns each teacher's
    episode statistics (over all ranks)."""
    parts, part = [], world.part(Block(0, len(bank), num_episodes))
    for block in blocks(part, num_envs):
        env = episode_env(bank.teachers, block, env_cfg, generator, device)
        offsets = None if position_offsets is None else block.of(position_offsets)
        stats, labels = fly_block(env, bank, block, student=student, position_offsets=offsets,
                                  record=dataset is not None)
        if dataset is not None:
            dataset.add_episodes(labels.observations, labels.targets, stats.lengths, block.teacher_ids())
        parts.append((stats, block))
    stats = TeacherStats.of_blocks(parts)
    return TeacherStats.combine(world.all_gather((part, stats)), len(bank)) if world.distributed else stats


def estimate_position_offsets(bank: TeacherBank, env_cfg, *, num_episodes: int = 100,
                              window: tuple[int, int] | None = (250, 500),
                              num_envs: int, generator: torch.Generator, device: torch.device | str,
                              world: World = World()) -> tuple[torch.Tensor, TeacherStats]:
    """rl-tools' steady-state position offset of every teacher: its mean position over steps [250, 500) of
    ``num_episodes`` deterministic episodes on its own dynamics (steps of running episodes only). Also returns
    the teachers' episode statistics (rl-tools prints them and requires a mean return >= SOLVED_RETURN).
    Returns offsets (num_teachers, 3) float32 on the CPU (zero for a teacher with no step in the window, and for
    every teacher when ``window`` is None: statistics only). Under torchrun each rank flies its `World.part`;
    positions and step counts are summed over ranks before the division."""
    sums, counts, parts = [], [], []
    part = world.part(Block(0, len(bank), num_episodes))
    for block in blocks(part, num_envs):
        env = episode_env(bank.teachers, block, env_cfg, generator, device)
        stats, labels = fly_block(env, bank, block, record=False, offset_window=window)
        if window is not None:
            sums.append(labels.position_sum.view(block.count, block.per_teacher, 3).sum(1))
            counts.append(labels.position_count.view(block.count, block.per_teacher).sum(1))
        parts.append((stats, block))
    stats = TeacherStats.of_blocks(parts)
    if world.distributed:
        stats = TeacherStats.combine(world.all_gather((part, stats)), len(bank))
    if window is None:
        return torch.zeros(len(bank), 3), stats
    s, c = torch.cat(sums), torch.cat(counts)
    if world.distributed:
        gathered = world.all_gather((part, s.cpu(), c.cpu()))
        s, c = torch.zeros(len(bank), 3, dtype=torch.float64), torch.zeros(len(bank), dtype=torch.long)
        for p, part_s, part_c in gathered:
            s[p.first:p.first + p.count] += part_s
            c[p.first:p.first + p.count] += part_c
    return (s / c.clamp(min=1)[:, None]).to(torch.float32).cpu(), stats


def evaluate_teachers(bank: TeacherBank, env_cfg, *, num_episodes: int, num_envs: int, generator: torch.Generator,
                      device, window: tuple[int, int] | None, min_return: float | None,
                      world: World = World()) -> tuple[torch.Tensor, dict]:
    """rl-tools' teacher evaluation before post-training: every teacher's steady-state position offset
    (`estimate_position_offsets`; ``window`` None: no offsets, e.g. on Isaac Lab tasks, whose observations are not
    l2f's) and its episode statistics; refuses teachers below ``min_return`` (rl-tools' SOLVED_RETURN, 300).
    Returns (offsets, the record kept as the run's ``teacher_eval``)."""
    t0 = time.perf_counter()
    offsets, stats = estimate_position_offsets(bank, env_cfg, num_episodes=num_episodes, window=window,
                                               num_envs=num_envs, generator=generator, device=device, world=world)
    per_teacher = [{"name": teacher_label(t), "source": getattr(t, "source", ""),
                    "return_mean": float(stats.mean_return[i]), "episode_length_mean": float(stats.mean_length[i]),
                    "share_terminated": float(stats.share_terminated[i]), "position_offset": offsets[i].tolist()}
                   for i, t in enumerate(bank.teachers)]
    weak = [(p["name"], p["return_mean"]) for p in per_teacher if min_return is not None and p["return_mean"] < min_return]
    if weak:
        listed = ", ".join(f"{n} ({r:.1f})" for n, r in weak[:5])
        raise DistillationError(f"{len(weak)} teacher(s) have a mean return below --min_teacher_return {min_return} "
                                f"on their own dynamics ({num_episodes} episodes): {listed}; rl-tools refuses "
                                f"unsolved teachers")
    return offsets, {"summary": stats.summary(), "teachers": per_teacher, "episodes": num_episodes,
                     "seconds": time.perf_counter() - t0}
