"""Stand-in for a user's Isaac Lab extension package that registers the seed's task id (tests only)."""
import gymnasium as gym

from isaaclab.app import launches

if not launches:
    raise ImportError("quadcopter_ext imported before isaaclab.app.AppLauncher started the simulation app")

gym.register(
    id="Isaac-Quadcopter-Point-Ctrl-v0",
    entry_point="isaaclab_tasks.quadcopter:QuadcopterDistillEnv",
    disable_env_checker=True,
    kwargs={"env_cfg_entry_point": "isaaclab_tasks.quadcopter:QuadcopterDistillEnvCfg"},
)
