"""Stand-in for `isaaclab_tasks.utils.parse_env_cfg` (tests only)."""
import importlib

import gymnasium as gym


def parse_env_cfg(task_name, device="cuda:0", num_envs=None, use_fabric=None):
    module, name = gym.spec(task_name).kwargs["env_cfg_entry_point"].split(":")
    cfg = getattr(importlib.import_module(module), name)()
    cfg.sim.device = device
    if num_envs is not None:
        cfg.scene.num_envs = num_envs
    return cfg
