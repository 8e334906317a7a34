"""Distillation of teachers into the RAPTOR GRU student with rl-tools' post-training semantics.

    from eyas.distill import DistillConfig, DistillationRunner
    summary = DistillationRunner(DistillConfig(teacher_checkpoint=["fixtures/teachers"], n_epochs=20)).run()

Pieces: `config` (every setting, once), `dataset` (storage and rl-tools batches), `collect` (teacher-forcing and
DAgger rollouts), `trainer` (the training step), `evaluation`, `checkpoint` (files and resume), `logger`,
`runner` (the epoch loop), `apg` (fine-tuning through the simulator), `report` (the end of a run), `cli`.
"""
from eyas.distill.dataset import Batch, DatasetError, DistillationError, EpisodeDataset
from eyas.distill.trainer import Distillation

__all__ = ["Batch", "DatasetError", "DistillationError", "EpisodeDataset", "Distillation", "DistillConfig",
           "DistillationRunner", "TeacherBank", "estimate_position_offsets"]


def __getattr__(name):  # the runner and collection import the env stack; load them on first use
    if name == "DistillConfig":
        from eyas.distill.config import DistillConfig
        return DistillConfig
    if name == "DistillationRunner":
        from eyas.distill.runner import DistillationRunner
        return DistillationRunner
    if name == "estimate_position_offsets":
        from eyas.distill import collect as _collect
        return getattr(_collect, name)
    if name == "TeacherBank":
        from eyas.teachers import TeacherBank
        return TeacherBank
    raise AttributeError(name)
