"""The `Teacher` interface: a deterministic expert that maps an observation batch to an action batch."""
from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import nn

from eyas.errors import EyasError


class TeacherError(EyasError, ValueError):
    """A teacher file could not be read, or does not fit the environment it is used with."""


class Teacher(nn.Module):
    """Deterministic expert policy.

    Attributes:
        num_obs: width of the observation vector `act` expects.
        num_actions: width of the action vector it returns (4 motor commands).
        obs_group: observation group of the eyas env it reads: "teacher", "privileged" or "policy".
        params: the `eyas.sim.Params` it was trained for, or None (privileged teacher over randomised dynamics,
            or unknown dynamics).
        name: short identifier (file stem or run name).
        source: path it was loaded from.
        meta: free-form metadata read alongside the weights (task config, observation layout, ...).
        obs_slice: optional (start, stop): the teacher reads only these columns of its observation group
            (e.g. (0, 26) for RAPTOR's pre-training teachers, whose inputs lead the env's 'teacher' group).
    """

    def __init__(
        self,
        net: nn.Module,
        num_obs: int,
        num_actions: int = 4,
        obs_group: str = "teacher",
        params: Any = None,
        name: str = "",
        source: str = "",
        action_clip: float | None = 1.0,
        meta: dict | None = None,
        obs_slice: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        if obs_group not in ("teacher", "privileged", "policy"):
            raise TeacherError(f"obs_group must be 'teacher', 'privileged' or 'policy', got {obs_group!r}")
        self.net = net
        self.num_obs = int(num_obs)
        self.num_actions = int(num_actions)
        self.obs_group = obs_group
        self.params = params
        self.name = name
        self.source = source
        self.action_clip = action_clip
        self.meta = dict(meta or {})
        if obs_slice is not None:
            start, stop = (int(v) for v in obs_slice)
            if stop - start != self.num_obs or start < 0:
                raise TeacherError(f"obs_slice {obs_slice} selects {stop - start} columns, teacher reads {self.num_obs}")
            obs_slice = (start, stop)
        self.obs_slice = obs_slice
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    @property
    def device(self) -> torch.device:
        for t in itertools.chain(self.net.parameters(), self.net.buffers()):  # not state_dict(): asked every step
            return t.device
        return torch.device("cpu")

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """Deterministic actions `[B, num_actions]` for observations `[B, num_obs]` (clipped to +-action_clip)."""
        if obs.shape[-1] != self.num_obs:
            raise TeacherError(
                f"teacher {self.name or self.source!r} expects {self.num_obs} observations per row "
                f"(group {self.obs_group!r}), got {obs.shape[-1]} (observation shape {tuple(obs.shape)})"
            )
        actions = self.net(obs.to(device=self.device, dtype=torch.float32))
        if self.action_clip is not None:
            actions = actions.clamp(-self.action_clip, self.action_clip)
        return actions

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.act(obs)

    def select(self, obs: Any) -> torch.Tensor:
        """This teacher's input from an env observation TensorDict (its group, restricted to `obs_slice`)."""
        x = obs[self.obs_group]
        return x if self.obs_slice is None else x[..., self.obs_slice[0]: self.obs_slice[1]]

    def act_on(self, obs: Any) -> torch.Tensor:
        """`act(select(obs))`: actions for an env observation TensorDict."""
        return self.act(self.select(obs))

    def extra_repr(self) -> str:
        kind = "privileged/randomised" if self.params is None else "per-dynamics"
        return f"name={self.name!r}, num_obs={self.num_obs}, obs_group={self.obs_group!r}, {kind}"


def check_teacher_env(teacher: Teacher, env: Any) -> None:
    """Raise `TeacherError` if `teacher` cannot read `env`'s observations (group missing or width mismatch)."""
    obs = env.get_observations()
    if teacher.obs_group not in obs.keys():
        raise TeacherError(
            f"teacher {teacher.name or teacher.source!r} reads observation group {teacher.obs_group!r}, "
            f"but the env provides only {sorted(obs.keys())}"
        )
    width = int(obs[teacher.obs_group].shape[-1])
    who = teacher.name or teacher.source
    if teacher.obs_slice is not None:
        if teacher.obs_slice[1] > width:
            raise TeacherError(
                f"teacher {who!r} reads columns {teacher.obs_slice[0]}:{teacher.obs_slice[1]} of group "
                f"{teacher.obs_group!r}, but the env's {teacher.obs_group!r} observations are {width} wide"
            )
    elif width != teacher.num_obs:
        hint = ""
        if teacher.num_obs < width:
            hint = (f" (if it reads only the leading columns, as RAPTOR's 26-wide pre-training teachers do, "
                    f"load it with obs_slice=(0, {teacher.num_obs}))")
        raise TeacherError(
            f"teacher {who!r} expects {teacher.num_obs} observations in group "
            f"{teacher.obs_group!r}, but the env's {teacher.obs_group!r} observations are {width} wide{hint}"
        )
    num_actions = int(getattr(env, "num_actions", teacher.num_actions))
    if num_actions != teacher.num_actions:
        raise TeacherError(
            f"teacher {teacher.name or teacher.source!r} outputs {teacher.num_actions} actions, env expects {num_actions}"
        )
