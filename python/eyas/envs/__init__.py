"""Embedded quadrotor environments (l2f physics from `eyas.sim`) with rsl_rl's `VecEnv` interface.

    import gymnasium as gym, eyas.envs
    env = gym.make("Isaac-Quadcopter-Point-Ctrl-v0", num_envs=1024, dynamics="randomized")
    # or: env = eyas.envs.PointControlEnv(eyas.envs.PointControlEnvCfg(num_envs=1024))
"""
import gymnasium as gym

from .point_control import (
    InitCfg,
    ObservationNoiseCfg,
    PointControlEnv,
    PointControlEnvCfg,
    RewardCfg,
    TerminationCfg,
    make_env,
)
from .features import dynamics_features
from .step import policy_observation
from .rollout import EpisodeStats, PolicyFn, evaluate, rollout, student_policy_fn

TASK_ID = "Isaac-Quadcopter-Point-Ctrl-v0"

if TASK_ID not in gym.registry:
    # disable_env_checker / order_enforce: gym.make returns the rsl_rl VecEnv itself (its step follows rsl_rl)
    gym.register(id=TASK_ID, entry_point="eyas.envs.point_control:make_env", disable_env_checker=True,
                 order_enforce=False)

__all__ = [
    "TASK_ID",
    "EpisodeStats",
    "InitCfg",
    "ObservationNoiseCfg",
    "PointControlEnv",
    "PointControlEnvCfg",
    "RewardCfg",
    "TerminationCfg",
    "dynamics_features",
    "evaluate",
    "make_env",
    "policy_observation",
    "PolicyFn",
    "rollout",
    "student_policy_fn",
]
