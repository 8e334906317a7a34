"""Teachers (experts) for distillation: a common `Teacher` interface, loaders for rsl_rl PPO checkpoints and
rl-tools HDF5 actors, the `TeacherBank` that acts for many at once, and PPO training / evaluation on the embedded
env (`eyas teacher train|eval`)."""
from .bank import Block, RecurrentTeacher, TeacherBank, teacher_label
from .base import Teacher, TeacherError, check_teacher_env
from .loading import latest_checkpoint, load_teacher, load_teacher_set, load_teachers

__all__ = ["Block", "RecurrentTeacher", "Teacher", "TeacherBank", "TeacherError", "check_teacher_env",
           "latest_checkpoint", "load_teacher", "load_teacher_set", "load_teachers", "teacher_label"]
