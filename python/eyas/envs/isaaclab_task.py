"""Isaac Lab tasks as distillation environments, used by `eyas distill --task ID` when Isaac Lab is installed.

Isaac Lab runs one simulation per process, started by its `AppLauncher` before any task module is imported. eyas
starts it headless, builds the task's configuration with `isaaclab_tasks.utils.parse_env_cfg`, makes the task
with `gymnasium.make(task, cfg=...)` and wraps it in Isaac Lab's `RslRlVecEnvWrapper` (the rsl_rl `VecEnv`
interface, observations as a TensorDict of groups). The student reads the ``policy`` group; teachers read their
own group (``teacher`` for privileged teachers, as in rsl_rl's distillation).

`IsaacLabTask` holds that one environment; `IsaacLabEpisodes` gives the collector and the evaluator what the
embedded env gives them: a batch of rows that all start a new episode now. Isaac Lab tasks draw their own
dynamics, so per-dynamics teachers (RAPTOR's 1000 teachers, `Teacher.params`) need the embedded env.
"""
from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from tensordict import TensorDict

from eyas.errors import EyasError

from .backend import Capabilities


TASK_PACKAGES = ("isaaclab_tasks",)  # imported after the app starts; they register the tasks


class IsaacLabError(EyasError, RuntimeError):
    """Isaac Lab is missing, or a task cannot be made or flown."""


def isaaclab_installed() -> bool:
    """True when Isaac Lab's task and rsl_rl packages are importable (without importing them: that needs the app)."""
    return all(importlib.util.find_spec(name) is not None for name in ("isaaclab", "isaaclab_tasks", "isaaclab_rl"))


def isaaclab_registers(task: str, packages: Sequence[str] = TASK_PACKAGES) -> bool:
    """True if the sources of ``packages`` (Isaac Lab's `isaaclab_tasks`, extension packages) register ``task``
    (``id="task"`` in a package ``__init__.py``, where Isaac Lab tasks call ``gym.register``).

    Reading the sources answers without starting Isaac Sim, which importing the tasks would need."""
    pattern = re.compile(r"""id\s*=\s*["']""" + re.escape(task) + r"""["']""")
    for package in packages:
        try:  # a dotted name imports its parent package, which may need the simulator
            spec = importlib.util.find_spec(package)
        except Exception:  # noqa: BLE001 - undetectable here; --env_backend isaaclab still works
            spec = None
        for root in (spec.submodule_search_locations or []) if spec is not None else []:
            for path in Path(root).rglob("__init__.py"):
                try:
                    if pattern.search(path.read_text(errors="ignore")):
                        return True
                except OSError:
                    continue
    return False


def _isaac_device(device: torch.device) -> str:
    return f"cuda:{device.index or 0}" if device.type == "cuda" else str(device)


def launch(task: str, *, num_envs: int, device: torch.device | str, seed: int, packages: Sequence[str] = TASK_PACKAGES):
    """Start Isaac Sim headless, import the task ``packages`` (they register their tasks) and return ``task`` as
    Isaac Lab's `RslRlVecEnvWrapper` with ``num_envs`` rows."""
    device = _isaac_device(torch.device(device))
    try:
        from isaaclab.app import AppLauncher
    except ImportError as e:
        raise IsaacLabError(f"--task {task!r}: Isaac Lab is not importable ({e})") from e
    AppLauncher(headless=True, device=device)  # must run before the task modules are imported
    import gymnasium as gym

    for package in packages:
        try:
            importlib.import_module(package)
        except ImportError as e:
            raise IsaacLabError(f"cannot import the task package {package!r}: {e}") from e
    from isaaclab_rl.rsl_rl import RslRlVecEnvWrapper
    from isaaclab_tasks.utils import parse_env_cfg

    if task not in gym.registry:
        raise IsaacLabError(f"--task {task!r} is not registered by {', '.join(packages)}")
    env_cfg = parse_env_cfg(task, device=device, num_envs=num_envs)
    env_cfg.seed = int(seed)
    return RslRlVecEnvWrapper(gym.make(task, cfg=env_cfg))


@dataclass
class IsaacLabTask:
    """An Isaac Lab task id; the environment (one per process) is made on first use with ``num_envs`` rows."""

    task: str
    num_envs: int
    device: str = "cpu"
    seed: int = 0
    packages: tuple[str, ...] = TASK_PACKAGES
    _env: object = field(default=None, repr=False)

    @property
    def env(self):
        if self._env is None:
            self._env = launch(self.task, num_envs=self.num_envs, device=self.device, seed=self.seed,
                               packages=self.packages)
        return self._env

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities("isaaclab", differentiable=False, fixed_dynamics=False, l2f_observation=False,
                            has_mdp=False)

    def episodes(self, rows: int) -> "IsaacLabEpisodes":
        return IsaacLabEpisodes(self.env, rows)

    def to_dict(self) -> dict:
        return {"backend": "isaaclab", "task": self.task, "num_envs": self.num_envs}


class IsaacLabEpisodes:
    """The first ``rows`` environments of an rsl_rl `VecEnv`, all reset to start a new episode now.

    Behaves like `eyas.envs.PointControlEnv` for the collector and evaluator: ``get_observations()`` and
    ``step(actions)`` see ``rows`` rows (the other rows fly zero actions and are ignored), and
    ``extras["terminated"]`` marks episodes that ended before the time limit. Episodes restart automatically
    (Isaac Lab resets finished environments inside ``step``)."""

    def __init__(self, env, rows: int):
        if not 1 <= rows <= env.num_envs:
            raise IsaacLabError(f"{rows} episode rows requested, the Isaac Lab task has {env.num_envs} environments "
                                f"(raise --num_envs)")
        self.env, self.num_envs, self.device = env, int(rows), torch.device(env.device)
        self.num_actions = int(env.num_actions)
        self.max_episode_length = int(env.max_episode_length)
        obs, _ = env.unwrapped.reset()  # every environment starts a new episode
        self._obs = TensorDict(dict(obs), batch_size=[env.num_envs])[:rows]
        if "policy" not in self._obs.keys():
            raise IsaacLabError(f"the Isaac Lab task has no 'policy' observation group for the student (groups: "
                                f"{sorted(self._obs.keys())})")
        self.num_obs = int(self._obs["policy"].shape[-1])
        self._steps = torch.zeros(rows, dtype=torch.long, device=self.device)

    def get_observations(self) -> TensorDict:
        return self._obs

    def step(self, actions: torch.Tensor) -> tuple[TensorDict, torch.Tensor, torch.Tensor, dict]:
        if actions.shape != (self.num_envs, self.num_actions):
            raise IsaacLabError(f"actions: expected shape ({self.num_envs}, {self.num_actions}), "
                                f"got {tuple(actions.shape)}")
        full = torch.zeros(self.env.num_envs, self.num_actions, dtype=actions.dtype, device=self.device)
        full[:self.num_envs] = actions
        obs, rewards, dones, extras = self.env.step(full)
        if not isinstance(obs, TensorDict):  # Isaac Lab releases for rsl_rl < 3 return a tensor and extras
            raise IsaacLabError(f"the Isaac Lab wrapper returned {type(obs).__name__} observations; eyas needs the "
                                f"TensorDict interface of Isaac Lab releases for rsl_rl >= 3")
        n = self.num_envs
        self._steps += 1
        done = dones[:n].bool()
        time_outs = extras.get("time_outs")
        # finite-horizon tasks report no time-outs: an episode that lasted the whole limit timed out
        timed_out = (time_outs[:n].bool() if time_outs is not None else self._steps >= self.max_episode_length) & done
        self._steps[done] = 0
        self._obs = obs[:n]
        return self._obs, rewards[:n], dones[:n], {"terminated": done & ~timed_out, "time_outs": timed_out}
