"""How much a distillation run collects and stores: episodes per teacher and epoch, the dataset's plan, and the
check that it holds more than one batch (rl-tools' post-training needs that)."""
from __future__ import annotations

from eyas.distill.dataset import DatasetPlan, DistillationError, episodes_per_teacher
from eyas.distill.distributed import World
from eyas.distill.setup import RunSetup
from eyas.teachers import Block


def episodes_for(s: RunSetup, world: World) -> int:
    """Episodes per teacher and epoch (`episodes_per_teacher`'s rule), said once when it is not --num_episodes."""
    c, t, n = s.cfg.collection, s.cfg.training, len(s.bank)
    episodes = episodes_per_teacher(c.num_episodes, c.num_envs, n, s.max_episode_length,
                                    t.batch_size * t.sequence_length, c.on_policy)
    if episodes != c.num_episodes and t.n_epochs > 0 and world.is_main:
        print(f"eyas distill: {episodes} episodes per teacher and epoch ({n} teacher{'s' * (n != 1)}, "
              f"--num_episodes {c.num_episodes}): raised so that all {c.num_envs} parallel envs fly"
              + (f" and an epoch holds more than one batch of {t.batch_size} x {t.sequence_length} steps"
                 if c.on_policy else "") + " (docs/distillation.md, Flags)", flush=True)
    return episodes


def plan_for(s: RunSetup, part: Block) -> DatasetPlan:
    """The dataset of ``part`` (a rank's teachers x episodes; one process: all of them)."""
    c = s.cfg.collection
    return DatasetPlan.for_run(part.count, part.per_teacher, s.max_episode_length, on_policy=c.on_policy,
                               n_epochs=max(1, s.cfg.training.n_epochs), max_dataset_steps=c.max_dataset_steps)


def check_batch_fits(s: RunSetup, num_episodes: int, world: World) -> None:
    """DistillationError when a rank's dataset cannot hold more than one batch (or the batch does not split)."""
    c, t, n = s.cfg.collection, s.cfg.training, world.size
    if t.n_epochs == 0:  # APG only: no dataset is ever filled
        return
    if t.batch_size % n:
        raise DistillationError(f"--batch_size {t.batch_size} is not a multiple of the {n} ranks (each rank "
                                f"trains on batch_size / ranks of the rows of every batch)")
    part = min(world.parts(Block(0, len(s.bank), num_episodes)), key=lambda b: b.rows)
    plan = plan_for(s, part)
    per_epoch = plan.per_epoch_steps
    available = plan.capacity if c.on_policy else min(plan.capacity, per_epoch * t.n_epochs)
    need = t.batch_size // n * t.sequence_length
    if available <= need:
        raise DistillationError(
            f"--batch_size {t.batch_size}{f' / {n} ranks' if n > 1 else ''} x --sequence_length "
            f"{t.sequence_length} = {need} steps per batch, but the dataset{' of a rank' if n > 1 else ''} can "
            f"hold at most {available} steps ({part.count} teachers x {part.per_teacher} episodes "
            f"x {s.max_episode_length} steps{'' if c.on_policy else ' x epochs'}); rl-tools needs more than one "
            f"batch of data. Lower --batch_size / --sequence_length or raise --num_episodes.")
    if c.max_dataset_steps is not None and not c.on_policy and c.max_dataset_steps < per_epoch:
        raise DistillationError(f"--max_dataset_steps {c.max_dataset_steps} is smaller than one epoch's data "
                                f"({per_epoch} steps)")
