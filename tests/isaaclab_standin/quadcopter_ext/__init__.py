"""Stand-in for a user's Isaac Lab extension package that registers the seed's task id (tests only)."""
from isaaclab_tasks.quadcopter import register

register(id="Isaac-Quadcopter-Point-Ctrl-v0", package=__name__)
