"""Teachers (experts) for distillation: a common `Teacher` interface, loaders for rsl_rl PPO checkpoints and
rl-tools HDF5 actors, and PPO training / evaluation on the embedded env (`eyas teacher train|eval`)."""
from .base import Teacher, TeacherError, check_teacher_env
from .loading import latest_checkpoint, load_teacher, load_teacher_set

__all__ = ["Teacher", "TeacherError", "check_teacher_env", "latest_checkpoint", "load_teacher", "load_teacher_set"]
