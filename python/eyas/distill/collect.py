"""Data collection for distillation: teachers or the student fly, teachers label every visited state.

Mirrors rl-tools' post-training (`gather_epoch`, `sample_trajectories`, `add_to_dataset` in
src/foundation_policy/post_training/helper.h):

* every teacher gets ``num_episodes`` episodes per epoch on its own dynamics (`Teacher.params`; a teacher without
  parameters, trained over randomised dynamics, gets a fresh RAPTOR-randomised parameter set per episode);
* the actor is the deterministic teacher (teacher forcing) or the student, whose hidden state starts every episode
  at its initial state; the student acts on the raw observation;
* each stored step holds the student's observation, with the position corrected by the teacher's steady-state
  position offset, and the teacher's deterministic action on the same state; an episode's last step
  (termination or the step limit) is flagged ``truncated``.

Episodes of many teachers run in one batched environment (rows teacher-major: ``num_episodes`` consecutive rows
per teacher), in chunks of at most ``num_envs`` rows. Feed-forward teachers of one architecture are evaluated
together with ``torch.func`` (one batched call per step instead of one call per teacher).
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Sequence

import torch
from tensordict import TensorDict

from eyas.distill.dataset import DistillationError, EpisodeDataset
from eyas.envs.isaaclab_task import IsaacLabEpisodes, IsaacLabTask


# ---------------------------------------------------------------------------------------------- teachers
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

    @torch.no_grad()
    def step(self, obs: torch.Tensor, hidden: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """One step from ``hidden`` ((1, batch, hidden_dim); None = the initial state): ``(actions, new hidden)``."""
        return self.policy.act(obs.to(self.policy.initial_hidden_state.dtype), hidden)


def load_recurrent_teacher(path) -> RecurrentTeacher:
    """An rl-tools GRU student checkpoint (.h5) as a teacher; ``"foundation_policy"`` means the released RAPTOR
    checkpoint of the foundation-policy package."""
    from pathlib import Path

    from eyas.rltools_h5 import RLToolsH5Error, load_rltools_h5, raptor_checkpoint_path

    if str(path) == "foundation_policy":
        try:
            path = raptor_checkpoint_path()
        except ImportError as e:
            raise DistillationError("teacher 'foundation_policy' needs the foundation-policy package") from e
    try:
        policy = load_rltools_h5(path)
    except (RLToolsH5Error, OSError, KeyError) as e:
        raise DistillationError(f"cannot load recurrent teacher {path}: {e}") from e
    return RecurrentTeacher(policy, name=Path(str(path)).stem, source=str(path))


def is_gru_student_file(path) -> bool:
    """True for an rl-tools HDF5 file whose actor contains a GRU layer (a student, not an MLP teacher)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            layers = f["actor"]["layers"]
            return any(str(layers[k].attrs.get("type", "")) == "gru" for k in layers)
    except (OSError, KeyError, TypeError):
        return False


def load_teachers(sources: Sequence, device: torch.device | str = "cpu") -> list:
    """Teachers from files, teacher run directories or directories of teachers (`eyas.teachers.load_teacher_set`),
    plus rl-tools GRU students (.h5, or ``foundation_policy``) as `RecurrentTeacher`s."""
    from pathlib import Path

    from eyas.teachers import TeacherError, load_teacher_set

    out = []
    for source in sources:
        path = Path(str(source))
        if str(source) == "foundation_policy" or (path.is_file() and path.suffix in (".h5", ".hdf5")
                                                  and is_gru_student_file(path)):
            out.append(load_recurrent_teacher(source).to(device))
            continue
        try:
            out.extend(load_teacher_set(str(source), device=str(device)))
        except TeacherError as e:
            raise DistillationError(f"cannot load teachers: {e}") from e
        except OSError as e:
            raise DistillationError(f"cannot read teacher {source}: {e}") from e
    if not out:
        raise DistillationError("no teachers found in " + ", ".join(map(str, sources)))
    return out


def select_input(teacher, obs: TensorDict) -> torch.Tensor:
    """The teacher's input from an env observation (its group, and `obs_slice` when the teacher has one)."""
    if hasattr(teacher, "select"):
        return teacher.select(obs)
    return obs[teacher.obs_group]


def _signature(teacher) -> tuple | None:
    """Hashable description of a teacher's architecture; None if it cannot be stacked."""
    from eyas.teachers import Teacher

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

    ``act(obs, first, count, per_teacher)``: rows ``[i * per_teacher, (i + 1) * per_teacher)`` of ``obs`` belong to
    teacher ``first + i``; returns (count * per_teacher, num_actions) float32 actions, clipped like `Teacher.act`."""

    def __init__(self, teachers: Sequence, device: torch.device | str = "cpu"):
        if not teachers:
            raise DistillationError("no teachers given")
        self.device = torch.device(device)
        self.teachers = [t.to(self.device) for t in teachers]
        self.num_actions = int(self.teachers[0].num_actions)
        self._hidden: dict[int, torch.Tensor] = {}  # recurrent teachers' states, per teacher slot
        if any(int(t.num_actions) != self.num_actions for t in self.teachers):
            raise DistillationError("teachers output different numbers of actions: "
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

    def reset(self, first: int, count: int, per_teacher: int) -> None:
        """Start new episodes: recurrent teachers return to their initial state (held here per teacher slot, so one
        teacher object may appear several times)."""
        self._hidden = {}

    @torch.no_grad()
    def act(self, obs: TensorDict, first: int, count: int, per_teacher: int) -> torch.Tensor:
        if self.stacked and count > 1:
            x = select_input(self.teachers[0], obs).to(self.device, torch.float32).reshape(count, per_teacher, -1)
            p = {k: v[first:first + count] for k, v in self._params.items()}
            b = {k: v[first:first + count] for k, v in self._buffers.items()}
            out = self._vcall(p, b, x).reshape(count * per_teacher, -1)
            return out.clamp(-self._clip, self._clip) if self._clip is not None else out
        chunks = []
        for i in range(count):
            t = self.teachers[first + i]
            x = select_input(t, obs[i * per_teacher:(i + 1) * per_teacher])
            if getattr(t, "is_recurrent", False):
                actions, self._hidden[first + i] = t.step(x, self._hidden.get(first + i))
            else:
                actions = t.act(x)
            chunks.append(actions.to(torch.float32))
        return torch.cat(chunks, 0)


def teacher_label(teacher) -> str:
    return getattr(teacher, "name", "") or getattr(teacher, "source", "") or type(teacher).__name__


def check_teachers_against_env(teachers: Sequence, env) -> None:
    """Raise `DistillationError` naming the first teacher that cannot read ``env``'s observations."""
    from eyas.teachers import TeacherError, check_teacher_env

    for i, t in enumerate(teachers):
        try:
            check_teacher_env(t, env)
        except TeacherError as e:
            raise DistillationError(f"teacher {i} ({teacher_label(t)}) does not fit the environment: {e}") from e
        params = getattr(t, "params", None)
        if params is not None and isinstance(env, IsaacLabEpisodes):
            raise DistillationError(f"teacher {i} ({teacher_label(t)}) was trained on fixed dynamics (one teacher per "
                                    f"dynamics set), but an Isaac Lab task draws its own dynamics; per-dynamics "
                                    f"teachers need the embedded env (--env_backend embedded)")
        if params is not None and params.batch_size != 1:
            raise DistillationError(f"teacher {i} ({teacher_label(t)}) carries {params.batch_size} dynamics "
                                    f"parameter sets; expected one (RAPTOR: one teacher per dynamics set)")


# ---------------------------------------------------------------------------------------------- environments
def episode_params(teachers: Sequence, first: int, count: int, per_teacher: int, env_cfg,
                   generator: torch.Generator):
    """`eyas.sim.Params` for ``count * per_teacher`` rows: each teacher's own parameters, or fresh randomised
    ones (RAPTOR's sampler, `env_cfg.domain_randomization`) for teachers without parameters."""
    from eyas import sim

    dtype = getattr(torch, env_cfg.dtype) if isinstance(env_cfg.dtype, str) else env_cfg.dtype
    parts = []
    for t in teachers[first:first + count]:
        params = getattr(t, "params", None)
        if params is None:
            parts.append(sim.sample_domain_randomized_params(per_teacher, generator, env_cfg.domain_randomization,
                                                             dtype=dtype, device="cpu"))
        else:
            parts.append(params.to("cpu", dtype).expand(per_teacher))
    return sim.Params.stack(parts)


def make_env(env_cfg, params, seed: int, device: torch.device | str):
    """A `PointControlEnv` with fixed per-row dynamics ``params``."""
    from eyas.envs import PointControlEnv

    cfg = dataclasses.replace(env_cfg, num_envs=params.batch_size, dynamics=params.to(device), seed=int(seed),
                              device=str(device))
    return PointControlEnv(cfg)


def episode_env(teachers: Sequence, first: int, count: int, per_teacher: int, env_cfg, generator: torch.Generator,
                device: torch.device | str):
    """Rows for ``count * per_teacher`` new episodes: the embedded env on each teacher's dynamics, or the first rows
    of an Isaac Lab task (`eyas.envs.isaaclab_task.IsaacLabTask`), which draws its own dynamics."""
    if isinstance(env_cfg, IsaacLabTask):
        return env_cfg.episodes(count * per_teacher)
    params = episode_params(teachers, first, count, per_teacher, env_cfg, generator)
    return make_env(env_cfg, params, draw_seed(generator), device)


def draw_seed(generator: torch.Generator) -> int:
    return int(torch.randint(0, 2**62, (1,), generator=generator))


# ---------------------------------------------------------------------------------------------- rollouts
@dataclass
class Rollout:
    """``n`` single episodes (time-major, padded to the step limit S)."""

    observations: torch.Tensor | None  # (S, n, num_obs): student observations, position-corrected
    targets: torch.Tensor | None  # (S, n, num_actions): teacher actions
    lengths: torch.Tensor  # (n,) steps stored per episode
    returns: torch.Tensor  # (n,) float64
    terminated: torch.Tensor  # (n,) bool
    position_sum: torch.Tensor | None = None  # (n, 3) float64 sum of positions over the offset window
    position_count: torch.Tensor | None = None  # (n,) steps in that sum


@torch.no_grad()
def rollout(env, bank: TeacherBank, first: int, count: int, per_teacher: int, *, student=None,
            position_offsets: torch.Tensor | None = None, record: bool = True,
            offset_window: tuple[int, int] | None = None) -> Rollout:
    """Fly one episode in every row of ``env`` (rows teacher-major, see `TeacherBank.act`).

    The deterministic teacher acts unless ``student`` is given; teachers label every step. ``position_offsets``
    (count, 3) is subtracted from the stored student positions. ``offset_window=(start, end)`` also sums each
    row's true position over steps [start, end) while its episode runs (steady-state estimation)."""
    n, device = env.num_envs, env.device
    if n != count * per_teacher:
        raise ValueError(f"env has {n} rows, expected {count} teachers x {per_teacher} episodes")
    max_steps = int(env.max_episode_length)
    obs = env.get_observations()
    num_obs = obs["policy"].shape[-1]
    buf_obs = torch.zeros(max_steps, n, num_obs, device=device) if record else None
    buf_tgt = torch.zeros(max_steps, n, bank.num_actions, device=device) if record else None
    offset_rows = None
    if position_offsets is not None:
        offset_rows = position_offsets.to(device, torch.float32).repeat_interleave(per_teacher, 0)
    alive = torch.ones(n, dtype=torch.bool, device=device)
    lengths = torch.zeros(n, dtype=torch.long, device=device)
    returns = torch.zeros(n, dtype=torch.float64, device=device)
    terminated = torch.zeros(n, dtype=torch.bool, device=device)
    pos_sum = torch.zeros(n, 3, dtype=torch.float64, device=device) if offset_window else None
    pos_count = torch.zeros(n, dtype=torch.long, device=device) if offset_window else None
    if student is not None:
        student.reset(batch_size=n, device=device)
    bank.reset(first, count, per_teacher)
    for t in range(max_steps):
        labels = bank.act(obs, first, count, per_teacher)
        bad = ~torch.isfinite(labels).all(-1) & alive
        if bool(bad.any()):
            row = int(bad.nonzero()[0, 0])
            teacher = bank.teachers[first + row // per_teacher]
            raise DistillationError(f"teacher {first + row // per_teacher} ({teacher_label(teacher)}) produced "
                                    f"non-finite actions (NaN/inf) at step {t} of an episode")
        policy_obs = obs["policy"]
        if record:
            student_obs = policy_obs.to(torch.float32)
            if offset_rows is not None:
                student_obs = torch.cat([student_obs[:, :3] - offset_rows, student_obs[:, 3:]], -1)
            buf_obs[t] = student_obs
            buf_tgt[t] = labels
        if offset_window is not None and offset_window[0] <= t < offset_window[1]:
            position = (env.state.position - env.target).to(torch.float64)
            pos_sum += position * alive[:, None]
            pos_count += alive
        actions = labels if student is None else student(policy_obs.to(torch.float32))
        obs, rewards, dones, extras = env.step(actions)
        returns += rewards.to(torch.float64) * alive
        lengths += alive
        terminated |= extras["terminated"].bool() & alive
        alive &= ~dones.bool()
        if t % 16 == 15 and not bool(alive.any()):
            break
    return Rollout(buf_obs, buf_tgt, lengths, returns, terminated, pos_sum, pos_count)


# ---------------------------------------------------------------------------------------------- epochs
@dataclass
class TeacherStats:
    """Per-teacher episode statistics of one collection (numpy-free tensors on the CPU, one entry per teacher)."""

    mean_return: torch.Tensor
    mean_length: torch.Tensor
    share_terminated: torch.Tensor

    @classmethod
    def of_rollouts(cls, parts: list) -> "TeacherStats":
        """Statistics of rollouts ``parts`` = [(rollout, teachers in it, episodes per teacher), ...] in teacher order."""
        r, l, t = zip(*((ro.returns.view(count, per).mean(1).cpu(),
                         ro.lengths.view(count, per).double().mean(1).cpu(),
                         ro.terminated.view(count, per).double().mean(1).cpu()) for ro, count, per in parts))
        return cls(torch.cat(r), torch.cat(l), torch.cat(t))

    def summary(self) -> dict:
        """rl-tools' aggregate: mean over teachers of the per-teacher means, and their std."""
        r, l = self.mean_return.double(), self.mean_length.double()
        return {
            "return_mean": float(r.mean()),
            "return_std": float(math.sqrt(max(float((r * r).mean() - r.mean() ** 2), 0.0))),
            "episode_length_mean": float(l.mean()),
            "episode_length_std": float(math.sqrt(max(float((l * l).mean() - l.mean() ** 2), 0.0))),
            "share_terminated": float(self.share_terminated.double().mean()),
        }


def _chunks(num_teachers: int, per_teacher: int, num_envs: int):
    step = max(1, num_envs // per_teacher)
    for first in range(0, num_teachers, step):
        yield first, min(step, num_teachers - first)


def collect(bank: TeacherBank, env_cfg, *, num_episodes: int, num_envs: int, generator: torch.Generator,
            device: torch.device | str, student=None, position_offsets: torch.Tensor | None = None,
            dataset: EpisodeDataset | None = None) -> TeacherStats:
    """One epoch's data: ``num_episodes`` episodes per teacher, flown by the teachers (``student=None``) or the
    student, appended to ``dataset`` teacher by teacher. Returns each teacher's episode statistics."""
    parts = []
    for first, count in _chunks(len(bank), num_episodes, num_envs):
        env = episode_env(bank.teachers, first, count, num_episodes, env_cfg, generator, device)
        offsets = None if position_offsets is None else position_offsets[first:first + count]
        ro = rollout(env, bank, first, count, num_episodes, student=student, position_offsets=offsets,
                     record=dataset is not None)
        if dataset is not None:
            teacher_ids = torch.arange(first, first + count).repeat_interleave(num_episodes)
            dataset.add_episodes(ro.observations, ro.targets, ro.lengths, teacher_ids)
        parts.append((ro, count, num_episodes))
    return TeacherStats.of_rollouts(parts)


def estimate_position_offsets(bank: TeacherBank, env_cfg, *, num_episodes: int = 100,
                              window: tuple[int, int] | None = (250, 500),
                              num_envs: int, generator: torch.Generator, device: torch.device | str
                              ) -> tuple[torch.Tensor, TeacherStats]:
    """rl-tools' steady-state position offset of every teacher: its mean position over steps [250, 500) of
    ``num_episodes`` deterministic episodes on its own dynamics (steps of running episodes only). Also returns
    the teachers' episode statistics (rl-tools prints them and requires a mean return >= SOLVED_RETURN).
    Returns offsets (num_teachers, 3) float32 on the CPU (zero for a teacher with no step in the window, and for
    every teacher when ``window`` is None: statistics only)."""
    offsets, parts = [], []
    for first, count in _chunks(len(bank), num_episodes, num_envs):
        env = episode_env(bank.teachers, first, count, num_episodes, env_cfg, generator, device)
        ro = rollout(env, bank, first, count, num_episodes, record=False, offset_window=window)
        if window is None:
            offsets.append(torch.zeros(count, 3))
        else:
            s = ro.position_sum.view(count, num_episodes, 3).sum(1)
            c = ro.position_count.view(count, num_episodes).sum(1).clamp(min=1)
            offsets.append((s / c[:, None]).to(torch.float32).cpu())
        parts.append((ro, count, num_episodes))
    return torch.cat(offsets), TeacherStats.of_rollouts(parts)
