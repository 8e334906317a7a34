"""Stand-in for `isaaclab_tasks`: registers one quadcopter task (tests only; see ../README.md)."""
from isaaclab_tasks.quadcopter import register

register(id="Standin-Quadcopter-Distill-v0", package=__name__)
