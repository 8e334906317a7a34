"""A quadcopter task with Isaac Lab's DirectRLEnv conventions, simulated by eyas' embedded env (tests only)."""
from dataclasses import dataclass, field

import gymnasium as gym
import torch

from eyas.envs import PointControlEnv, PointControlEnvCfg


def register(id: str, package: str) -> None:  # noqa: A002 - gym.register's keyword
    """Register the task as ``id`` (each package spells out ``id="..."`` in its __init__.py, as Isaac Lab's do)."""
    from isaaclab.app import launches

    if not launches:  # Isaac Lab's task modules need the running simulation app
        raise ImportError(f"{package} imported before isaaclab.app.AppLauncher started the simulation app")
    gym.register(id=id, entry_point="isaaclab_tasks.quadcopter:QuadcopterDistillEnv", disable_env_checker=True,
                 kwargs={"env_cfg_entry_point": "isaaclab_tasks.quadcopter:QuadcopterDistillEnvCfg"})


@dataclass
class SimCfg:
    device: str = "cuda:0"
    use_fabric: bool = True


@dataclass
class SceneCfg:
    num_envs: int = 4096


@dataclass
class QuadcopterDistillEnvCfg:
    sim: SimCfg = field(default_factory=SimCfg)
    scene: SceneCfg = field(default_factory=SceneCfg)
    seed: int | None = None
    is_finite_horizon: bool = False
    episode_length_steps: int = 500


class QuadcopterDistillEnv(gym.Env):
    """Observation groups ``policy`` (22-D, RAPTOR's) and ``teacher`` (74-D, privileged); resets finished rows."""

    def __init__(self, cfg: QuadcopterDistillEnvCfg, render_mode=None, **kwargs):
        self.cfg = cfg
        self.num_envs, self.device = cfg.scene.num_envs, torch.device(cfg.sim.device)
        self._sim = PointControlEnv(PointControlEnvCfg(num_envs=self.num_envs, dynamics="randomized",
                                                       seed=cfg.seed or 0, device=str(self.device),
                                                       max_episode_length=cfg.episode_length_steps))
        self.max_episode_length = int(self._sim.max_episode_length)
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, shape=(4,))

    @property
    def episode_length_buf(self):
        return self._sim.episode_length_buf

    def _get_observations(self) -> dict:
        return dict(self._sim.get_observations().items())

    def reset(self, seed=None, options=None):
        obs, extras = self._sim.reset(seed=seed)
        return dict(obs.items()), {}

    def step(self, action):
        obs, reward, dones, extras = self._sim.step(action)
        return dict(obs.items()), reward, extras["terminated"], extras["time_outs"], {"log": extras.get("log", {})}
