"""Stand-in for `isaaclab_tasks`: registers one quadcopter task (tests only; see ../README.md)."""
import gymnasium as gym

from isaaclab.app import launches

if not launches:  # Isaac Lab's task modules need the running simulation app
    raise ImportError("isaaclab_tasks imported before isaaclab.app.AppLauncher started the simulation app")

gym.register(
    id="Standin-Quadcopter-Distill-v0",
    entry_point="isaaclab_tasks.quadcopter:QuadcopterDistillEnv",
    disable_env_checker=True,
    kwargs={"env_cfg_entry_point": "isaaclab_tasks.quadcopter:QuadcopterDistillEnvCfg"},
)
