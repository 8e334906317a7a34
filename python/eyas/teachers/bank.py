"""`TeacherBank`: the deterministic actions of many teachers, each on its own block of episode rows.

A batch of episodes is teacher-major: `Block(first, count, per_teacher)` says that rows
``[i * per_teacher, (i + 1) * per_teacher)`` belong to teacher ``first + i`` for ``i < count``. Feed-forward
teachers of one architecture are evaluated together with ``torch.func`` (one batched call per step instead of one
call per teacher); recurrent teachers (GRU students such as the released RAPTOR policy) keep their hidden state
here, per teacher slot, from the start of a block's episodes.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Iterator, Protocol, Sequence

import torch

from .base import Teacher, TeacherError


class TeacherLike(Protocol):
    """What the bank and the collection read of a teacher (`Teacher`, or `RecurrentTeacher`)."""

    num_obs: int
    num_actions: int
    obs_group: str
    params: Any  # `eyas.sim.Params` of its own dynamics, or None (privileged / randomised)
    name: str
    source: str

    def select(self, obs: Any) -> torch.Tensor: ...


@dataclass(frozen=True)
class Block:
    """``count`` consecutive teachers from ``first``, ``per_teacher`` episode rows each (teacher-major rows)."""

    first: int
    count: int
    per_teacher: int

    @property
    def rows(self) -> int:
        return self.count * self.per_teacher

    def teacher_of_row(self, row: int) -> int:
        return self.first + row // self.per_teacher

    def teacher_ids(self) -> torch.Tensor:
        """(rows,) the teacher index of every row."""
        return torch.arange(self.first, self.first + self.count).repeat_interleave(self.per_teacher)

    def of(self, items: Sequence) -> Sequence:
        """This block's share of a per-teacher sequence (teachers, offsets)."""
        return items[self.first:self.first + self.count]

    @staticmethod
    def covering(num_teachers: int, per_teacher: int, max_rows: int) -> Iterator["Block"]:
        """Blocks over all teachers with at most ``max_rows`` rows each (at least one teacher per block)."""
        step = max(1, max_rows // per_teacher)
        for first in range(0, num_teachers, step):
            yield Block(first, min(step, num_teachers - first), per_teacher)


class RecurrentTeacher(torch.nn.Module):
    """A GRU student used as a teacher (e.g. the released RAPTOR policy), on the "policy" observation.

    rl-tools' `add_to_dataset` resets a teacher's state at episode starts and steps it through the episode with
    `evaluate_step`; `TeacherBank` does the same, holding the state per teacher slot (one episode per row)."""

    is_recurrent = True

    def __init__(self, policy, name: str = "", source: str = "", obs_group: str = "policy"):
        super().__init__()
        self.policy = policy.eval()
        for p in self.policy.parameters():
            p.requires_grad_(False)
        self.num_obs, self.num_actions = policy.num_obs, policy.num_actions
        self.obs_group, self.params, self.name, self.source = obs_group, None, name, source
        self.action_clip, self.obs_slice = None, None

    def select(self, obs: Any) -> torch.Tensor:
        return obs[self.obs_group]

    @torch.no_grad()
    def step(self, obs: torch.Tensor, hidden: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """One step from ``hidden`` ((1, batch, hidden_dim); None = the initial state): ``(actions, new hidden)``."""
        return self.policy.act(obs.to(self.policy.initial_hidden_state.dtype), hidden)


def teacher_label(teacher) -> str:
    return getattr(teacher, "name", "") or getattr(teacher, "source", "") or type(teacher).__name__


def _signature(teacher) -> tuple | None:
    """Hashable description of a teacher's architecture; None if it cannot be stacked."""
    if not isinstance(teacher, Teacher):
        return None
    parts = [teacher.obs_group, getattr(teacher, "obs_slice", None), teacher.num_obs, teacher.num_actions,
             teacher.action_clip]
    for name, module in teacher.net.named_modules():
        attrs = tuple(sorted((k, repr(v)) for k, v in vars(module).items()
                             if not k.startswith("_") and k != "training" and not isinstance(v, torch.Tensor)))
        parts.append((name, type(module).__qualname__, attrs))
    for name, t in teacher.net.state_dict().items():
        parts.append((name, tuple(t.shape), t.dtype))
    return tuple(parts)


class TeacherBank:
    """Deterministic actions of many teachers, each on its own rows of a batch.

    ``act(obs, block)``: rows of ``obs`` (a TensorDict or a dict of observation groups) as `Block` lays them out;
    returns (block.rows, num_actions) float32 actions, clipped like `Teacher.act`."""

    def __init__(self, teachers: Sequence[TeacherLike], device: torch.device | str = "cpu"):
        if not teachers:
            raise TeacherError("no teachers given")
        self.device = torch.device(device)
        self.teachers = [t.to(self.device) for t in teachers]
        self.num_actions = int(self.teachers[0].num_actions)
        self._hidden: dict[int, torch.Tensor] = {}  # recurrent teachers' states, per teacher slot
        if any(int(t.num_actions) != self.num_actions for t in self.teachers):
            raise TeacherError("teachers output different numbers of actions: "
                               f"{sorted({int(t.num_actions) for t in self.teachers})}")
        signatures = [_signature(t) for t in self.teachers]
        self.stacked = len(self.teachers) > 1 and signatures[0] is not None and all(s == signatures[0] for s in signatures)
        if self.stacked:
            params, buffers = torch.func.stack_module_state([t.net for t in self.teachers])
            self._params = {k: v.detach() for k, v in params.items()}
            self._buffers = {k: v.detach() for k, v in buffers.items()}
            self._base = copy.deepcopy(self.teachers[0].net).to("meta")
            self._clip = self.teachers[0].action_clip

            def call(p, b, x):
                return torch.func.functional_call(self._base, (p, b), (x,))

            self._vcall = torch.func.vmap(call)

    def __len__(self) -> int:
        return len(self.teachers)

    def reset(self, block: Block) -> None:
        """Start new episodes on ``block``: recurrent teachers return to their initial state (held here per teacher
        slot, so one teacher object may appear several times)."""
        self._hidden = {}

    @torch.no_grad()
    def act(self, obs, block: Block) -> torch.Tensor:
        first, count, per = block.first, block.count, block.per_teacher
        if self.stacked and count > 1:
            x = self.teachers[0].select(obs).to(self.device, torch.float32).reshape(count, per, -1)
            p = {k: v[first:first + count] for k, v in self._params.items()}
            b = {k: v[first:first + count] for k, v in self._buffers.items()}
            out = self._vcall(p, b, x).reshape(count * per, -1)
            return out.clamp(-self._clip, self._clip) if self._clip is not None else out
        chunks = []
        for i in range(count):
            t = self.teachers[first + i]
            x = t.select(obs)  # then its rows: slicing a TensorDict costs more than the teacher's net on ~100 rows
            x = x if count == 1 else x[i * per:(i + 1) * per]
            if getattr(t, "is_recurrent", False):
                actions, self._hidden[first + i] = t.step(x, self._hidden.get(first + i))
            else:
                actions = t.act(x)
            chunks.append(actions.to(torch.float32))
        return chunks[0] if count == 1 else torch.cat(chunks, 0)
