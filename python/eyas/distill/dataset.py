"""Episode storage for distillation and rl-tools' batch construction.

Episodes are stored back to back in preallocated tensors (rl-tools `dataset_input`, `dataset_output_target`,
`dataset_truncated`, `dataset_episode_start_indices`, src/foundation_policy/post_training/main.cpp):

    observations  (capacity, num_obs)      float32   4 * num_obs bytes / step
    targets       (capacity, num_actions)  float32   4 * num_actions bytes / step
    truncated     (capacity,)              bool      1 byte / step: last step of its episode
    episode_start, episode_length, episode_teacher  (max_episodes,)  int64   24 bytes / episode

RAPTOR's on-policy epoch (1000 teachers x 10 episodes x 500 steps = 5e6 steps, 22 obs, 4 actions) takes
5e6 * (88 + 16 + 1) + 1e4 * 24 = 525 MB; `get_batches` adds a walk index of 9 bytes / step (45 MB) while it runs.

`get_batches` walks the episodes in (shuffled) order and packs them back to back into `batch_size` rows of
`sequence_length` steps, row after row, exactly as rl-tools does: a row continues the episode where the previous
row stopped; inside a row, the step after an episode's last step starts the next episode and is flagged in the
reset mask; the first step of a row is never flagged (rl-tools' GRU starts every row from its initial state
anyway); the walk stops when it reaches the end of the last episode, discarding the batch it was filling, so
`num_batches = (num_steps - 1) // (batch_size * sequence_length)`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import torch

from eyas.errors import EyasError


class DistillationError(EyasError, ValueError):
    """A distillation input or setting that cannot work (bad teacher, mismatched env, impossible batch shape)."""


class DatasetError(DistillationError):
    """Invalid use of the episode dataset (capacity exceeded, bad shapes, too little data for a batch)."""


@dataclass
class Batch:
    """One training batch. ``sequence_length > 1``: observations (S, B, obs), targets (S, B, act), reset (S, B)
    bool; ``sequence_length == 1`` (MLP mode): observations (B, obs), targets (B, act), reset None.
    ``index``: the storage row of every sample, (S, B) or (B,), for per-sample statistics."""

    observations: torch.Tensor
    targets: torch.Tensor
    reset: torch.Tensor | None
    index: torch.Tensor | None = None


class EpisodeDataset:
    """Preallocated, contiguous storage of labelled episodes (see the module docstring for the layout)."""

    def __init__(self, capacity: int, num_obs: int, num_actions: int, *, max_episodes: int | None = None,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        if capacity < 1:
            raise DatasetError(f"capacity must be >= 1 step, got {capacity}")
        self.capacity = int(capacity)
        self.max_episodes = int(max_episodes if max_episodes is not None else capacity)
        self.num_obs, self.num_actions = int(num_obs), int(num_actions)
        self.device, self.dtype = torch.device(device), dtype
        self.observations = torch.zeros(self.capacity, self.num_obs, device=self.device, dtype=dtype)
        self.targets = torch.zeros(self.capacity, self.num_actions, device=self.device, dtype=dtype)
        self.truncated = torch.zeros(self.capacity, device=self.device, dtype=torch.bool)
        self.episode_start = torch.zeros(self.max_episodes, device=self.device, dtype=torch.long)
        self.episode_length = torch.zeros(self.max_episodes, device=self.device, dtype=torch.long)
        self.episode_teacher = torch.zeros(self.max_episodes, device=self.device, dtype=torch.long)
        self.num_steps = 0
        self.num_episodes = 0

    @staticmethod
    def nbytes_for(capacity: int, num_obs: int, num_actions: int, max_episodes: int | None = None,
                   dtype: torch.dtype = torch.float32) -> int:
        """Bytes the tensors of a dataset of this size occupy (excluding the transient walk index)."""
        item = torch.empty((), dtype=dtype).element_size()
        episodes = capacity if max_episodes is None else max_episodes
        return capacity * (item * (num_obs + num_actions) + 1) + episodes * 3 * 8

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.observations, self.targets, self.truncated,
                                                           self.episode_start, self.episode_length,
                                                           self.episode_teacher))

    def __len__(self) -> int:
        return self.num_steps

    # ------------------------------------------------------------------ filling
    def clear(self) -> None:
        """Forget all episodes (rl-tools' ON_POLICY reset of `current_index` / `current_episode`)."""
        self.num_steps = 0
        self.num_episodes = 0

    def add_episodes(self, observations: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor,
                     teacher_ids: torch.Tensor | None = None) -> None:
        """Append ``n`` episodes given time-major and padded: observations (S, n, obs), targets (S, n, act),
        lengths (n,) with 1 <= length <= S; steps at or after an episode's length are ignored.
        Checks everything (shapes, capacity, finite values) before writing anything."""
        if observations.dim() != 3 or targets.dim() != 3 or observations.shape[:2] != targets.shape[:2]:
            raise DatasetError(f"expected observations (S, n, {self.num_obs}) and targets (S, n, {self.num_actions}), "
                               f"got {tuple(observations.shape)} and {tuple(targets.shape)}")
        if observations.shape[2] != self.num_obs or targets.shape[2] != self.num_actions:
            raise DatasetError(f"dataset holds {self.num_obs} observations and {self.num_actions} actions per step, "
                               f"got {observations.shape[2]} and {targets.shape[2]}")
        seq, n = observations.shape[:2]
        lengths = lengths.to(self.device, torch.long)
        if lengths.shape != (n,):
            raise DatasetError(f"lengths must have shape ({n},), got {tuple(lengths.shape)}")
        if n == 0:
            return
        if bool((lengths < 1).any()) or bool((lengths > seq).any()):
            raise DatasetError(f"episode lengths must be in [1, {seq}], got min {int(lengths.min())} "
                               f"max {int(lengths.max())}")
        total = int(lengths.sum())
        if self.num_steps + total > self.capacity or self.num_episodes + n > self.max_episodes:
            raise DatasetError(f"dataset full: {self.num_steps} + {total} steps > capacity {self.capacity} "
                               f"or {self.num_episodes} + {n} episodes > {self.max_episodes}")
        valid = torch.arange(seq, device=self.device)[None, :] < lengths[:, None]  # (n, S), episode-major
        obs = observations.to(self.device, self.dtype).transpose(0, 1)[valid]
        tgt = targets.to(self.device, self.dtype).transpose(0, 1)[valid]
        if not bool(torch.isfinite(tgt).all()):
            raise DatasetError("targets (teacher actions) contain NaN or inf")
        if not bool(torch.isfinite(obs).all()):
            raise DatasetError("observations contain NaN or inf")
        s0, e0 = self.num_steps, self.num_episodes
        starts = s0 + torch.cumsum(lengths, 0) - lengths
        self.observations[s0:s0 + total] = obs
        self.targets[s0:s0 + total] = tgt
        self.truncated[s0:s0 + total] = False
        self.truncated[starts + lengths - 1] = True
        self.episode_start[e0:e0 + n] = starts
        self.episode_length[e0:e0 + n] = lengths
        self.episode_teacher[e0:e0 + n] = (teacher_ids.to(self.device, torch.long) if teacher_ids is not None
                                           else torch.full((n,), -1, dtype=torch.long, device=self.device))
        self.num_steps += total
        self.num_episodes += n

    def drop_oldest(self, num_steps: int) -> int:
        """Remove the oldest whole episodes holding at least ``num_steps`` steps (FIFO when aggregating);
        returns the number of steps removed."""
        if num_steps <= 0 or self.num_episodes == 0:
            return 0
        ends = self.episode_start[:self.num_episodes] + self.episode_length[:self.num_episodes]
        k = int(torch.searchsorted(ends, torch.tensor([num_steps], device=self.device), right=False)[0]) + 1
        k = min(k, self.num_episodes)
        removed = int(ends[k - 1])
        keep_steps, keep_eps = self.num_steps - removed, self.num_episodes - k
        for t in (self.observations, self.targets, self.truncated):
            t[:keep_steps] = t[removed:self.num_steps].clone()
        for t in (self.episode_start, self.episode_length, self.episode_teacher):
            t[:keep_eps] = t[k:self.num_episodes].clone()
        self.episode_start[:keep_eps] -= removed
        self.num_steps, self.num_episodes = keep_steps, keep_eps
        return removed

    # ------------------------------------------------------------------ batches
    def walk(self, shuffle: bool = True, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The sample order of one epoch: ``(index (num_steps,), episode_start_flag (num_steps,))``, episodes in
        random order (a uniform permutation, like rl-tools' Fisher-Yates) or in storage order."""
        n = self.num_episodes
        if shuffle:
            order = torch.randperm(n, generator=generator, device="cpu" if generator is None else generator.device)
            order = order.to(self.device)
        else:
            order = torch.arange(n, device=self.device)
        lengths = self.episode_length[:n][order]
        starts = self.episode_start[:n][order]
        offsets = torch.cumsum(lengths, 0) - lengths  # position of each episode in the walk
        total = self.num_steps
        index = torch.repeat_interleave(starts - offsets, lengths, output_size=total) + torch.arange(total, device=self.device)
        first = torch.zeros(total, dtype=torch.bool, device=self.device)
        first[offsets] = True
        return index, first

    def num_batches(self, batch_size: int, sequence_length: int) -> int:
        """Batches `get_batches` yields: rl-tools stops inside the batch holding the walk's last step."""
        _check_batch_shape(batch_size, sequence_length)
        return max(self.num_steps - 1, 0) // (batch_size * sequence_length)

    def get_batches(self, batch_size: int, sequence_length: int, shuffle: bool = True,
                    generator: torch.Generator | None = None) -> Iterator[Batch]:
        """Yield rl-tools' batches for one epoch (see the module docstring). Raises `DatasetError` when the
        dataset holds too few steps for a single batch."""
        count = self.num_batches(batch_size, sequence_length)
        if count == 0:
            raise DatasetError(f"one batch needs more than batch_size x sequence_length = {batch_size} x "
                               f"{sequence_length} = {batch_size * sequence_length} steps, the dataset holds "
                               f"{self.num_steps}")
        index, first = self.walk(shuffle, generator)
        per_batch = batch_size * sequence_length
        column = torch.arange(sequence_length, device=self.device)
        for b in range(count):
            rows = index[b * per_batch:(b + 1) * per_batch].view(batch_size, sequence_length)
            if sequence_length == 1:
                rows = rows[:, 0]
                yield Batch(self.observations[rows], self.targets[rows], None, rows)
                continue
            starts = first[b * per_batch:(b + 1) * per_batch].view(batch_size, sequence_length) & (column > 0)
            rows = rows.t()
            yield Batch(self.observations[rows], self.targets[rows], starts.t().contiguous(), rows)

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict:
        """The filled part (for resuming an aggregating run)."""
        s, e = self.num_steps, self.num_episodes
        return {"observations": self.observations[:s].cpu(), "targets": self.targets[:s].cpu(),
                "truncated": self.truncated[:s].cpu(), "episode_start": self.episode_start[:e].cpu(),
                "episode_length": self.episode_length[:e].cpu(), "episode_teacher": self.episode_teacher[:e].cpu()}

    def load_state_dict(self, state: dict) -> None:
        s, e = state["observations"].shape[0], state["episode_start"].shape[0]
        if s > self.capacity or e > self.max_episodes:
            raise DatasetError(f"saved dataset ({s} steps, {e} episodes) exceeds this dataset's capacity")
        for name in ("observations", "targets", "truncated"):
            getattr(self, name)[:s] = state[name].to(self.device)
        for name in ("episode_start", "episode_length", "episode_teacher"):
            getattr(self, name)[:e] = state[name].to(self.device)
        self.num_steps, self.num_episodes = s, e


def _check_batch_shape(batch_size: int, sequence_length: int) -> None:
    if int(sequence_length) < 1:
        raise DatasetError(f"sequence_length must be >= 1, got {sequence_length}")
    if int(batch_size) < 1:
        raise DatasetError(f"batch_size must be >= 1, got {batch_size}")


@dataclass(frozen=True)
class DatasetPlan:
    """The size of a run's dataset: ``per_epoch_steps`` one epoch adds at most (every episode at the step limit),
    ``capacity`` in steps, ``max_episodes``. On-policy: one epoch; aggregating: every epoch, or the
    ``max_dataset_steps`` cap (oldest episodes dropped), with room for one episode per step (short DAgger
    episodes, 24 bytes each)."""

    per_epoch_steps: int
    capacity: int
    max_episodes: int

    @classmethod
    def for_run(cls, num_teachers: int, num_episodes: int, max_episode_length: int, *, on_policy: bool,
                n_epochs: int, max_dataset_steps: int | None) -> "DatasetPlan":
        per_epoch = num_teachers * num_episodes * max_episode_length
        per_epoch_episodes = num_teachers * num_episodes
        if on_policy:
            return cls(per_epoch, per_epoch, per_epoch_episodes)
        capacity = max_dataset_steps or per_epoch * n_epochs
        return cls(per_epoch, capacity, min(capacity, per_epoch_episodes * n_epochs))

    def allocate(self, num_obs: int, num_actions: int, device) -> EpisodeDataset:
        try:
            return EpisodeDataset(self.capacity, num_obs, num_actions, max_episodes=self.max_episodes, device=device)
        except (RuntimeError, MemoryError) as e:  # allocation failure
            need = EpisodeDataset.nbytes_for(self.capacity, num_obs, num_actions, self.max_episodes)
            raise DistillationError(f"cannot allocate the dataset ({self.capacity} steps, {need / 2**20:.0f} MiB): "
                                    f"{e}; use --on_policy or --max_dataset_steps") from e


def episodes_per_teacher(num_episodes: int, num_envs: int, num_teachers: int, max_episode_length: int,
                         batch_steps: int, on_policy: bool) -> int:
    """Episodes each teacher flies per epoch: rl-tools' NUM_EPISODES (``num_episodes``), raised only where it would
    leave parallel envs idle or an epoch without a training step:

    * at least ``ceil(num_envs / num_teachers)``: every one of the ``--num_envs`` parallel envs flies an episode
      each epoch (the meaning ``--num_envs`` has in the seed's commands and in Isaac Lab);
    * on-policy, at least ``batch_steps // (num_teachers * max_episode_length) + 1``: an epoch of full-length
      episodes holds more than one batch (rl-tools trains on ``(steps - 1) // batch_steps`` batches).

    With RAPTOR's 1000 teachers x 10 episodes (or any setting whose data suffices) it is ``num_episodes``: rl-tools'
    semantics are unchanged."""
    episodes = max(int(num_episodes), math.ceil(int(num_envs) / int(num_teachers)))
    if on_policy:
        episodes = max(episodes, int(batch_steps) // (int(num_teachers) * int(max_episode_length)) + 1)
    return episodes
