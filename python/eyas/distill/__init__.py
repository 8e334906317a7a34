"""Distillation of teachers into the RAPTOR GRU student with rl-tools' post-training semantics.

    from eyas.distill import DistillConfig, DistillationRunner
    summary = DistillationRunner(DistillConfig(teacher_checkpoint=["fixtures/teachers"], n_epochs=20)).run()

Pieces: `EpisodeDataset` (storage and rl-tools batches), `collect` / `TeacherBank` (teacher-forcing and DAgger
rollouts), `Distillation` (the training step), `DistillationRunner` (the epoch loop), `eyas distill` (CLI).
"""
from eyas.distill.dataset import Batch, DatasetError, DistillationError, EpisodeDataset
from eyas.distill.trainer import Distillation

__all__ = ["Batch", "DatasetError", "DistillationError", "EpisodeDataset", "Distillation", "DistillConfig",
           "DistillationRunner", "TeacherBank", "estimate_position_offsets"]


def __getattr__(name):  # the runner and collection import the env stack; load them on first use
    if name in ("DistillConfig", "DistillationRunner"):
        from eyas.distill import runner
        return getattr(runner, name)
    if name in ("TeacherBank", "estimate_position_offsets"):
        from eyas.distill import collect as _collect
        return getattr(_collect, name)
    raise AttributeError(name)
