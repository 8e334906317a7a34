"""`DistillationRunner`: rl-tools' post-training loop (src/foundation_policy/post_training/main.cpp) in PyTorch.

    setup   load teachers; estimate each teacher's steady-state position offset and check it is solved
            (mean return >= min_teacher_return, rl-tools' SOLVED_RETURN = 300)
    epoch   1. ON_POLICY: clear the dataset
            2. collect num_episodes episodes per teacher: the teacher flies for the first epoch_teacher_forcing
               epochs, the student afterwards (DAgger); teachers label every step
            3. log the collection's returns ("evaluation/..."); from the first DAgger epoch on, the student that
               flew is the best actor if its mean return over teachers is the highest so far
            4. one pass over the dataset in rl-tools' batches (shuffled episodes packed into batch_size rows of
               sequence_length steps): MSE, rl-tools' Adam
            5. checkpoint (PyTorch + rl-tools HDF5), evaluate on held-out randomised dynamics and registry models
    apg     optional (``apg_iterations`` > 0, not rl-tools): fine-tune the best actor by backpropagating flights
            through the differentiable simulator (`eyas.distill.apg`), evaluating every ``apg_eval_every`` steps;
            the best evaluation return becomes the best actor
    end     save the best actor; evaluate it; plots

Everything random comes from one CPU `torch.Generator` (saved with each epoch), so `resume` continues a run as if it
had not stopped (on the same device and thread count).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import pickle
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from eyas.distill.collect import (
    TeacherBank,
    check_teachers_against_env,
    collect,
    estimate_position_offsets,
    load_teachers,
    teacher_label,
)
from eyas.distill.apg import STATS as APG_STATS
from eyas.distill.apg import AnalyticPolicyGradient, APGConfig
from eyas.distill.dataset import DistillationError, EpisodeDataset
from eyas.distill.trainer import Distillation
from eyas.model import StudentPolicy

TASK_ID = "Isaac-Quadcopter-Point-Ctrl-v0"


@dataclass
class DistillConfig:
    """All settings of a distillation run (CLI flags of the same names; defaults are rl-tools' post-training)."""

    teacher_checkpoint: list[str] = field(default_factory=list)
    task: str = TASK_ID
    env_backend: str = "auto"  # auto | embedded | isaaclab (see resolve_task)
    isaaclab_packages: list[str] = field(default_factory=lambda: ["isaaclab_tasks"])  # they register Isaac Lab tasks
    num_envs: int = 1024  # environment rows flown in parallel during collection and offset estimation
    n_epochs: int = 1000  # N_EPOCH
    num_episodes: int = 10  # NUM_EPISODES per teacher and epoch
    batch_size: int = 64  # BATCH_SIZE
    sequence_length: int = 500  # SEQUENCE_LENGTH
    learning_rate: float = 1e-4  # ADAM_PARAMETERS::ALPHA
    epoch_teacher_forcing: int = 10  # EPOCH_TEACHER_FORCING
    on_policy: bool = True  # ON_POLICY
    shuffle: bool = True  # SHUFFLE
    position_offset_correction: bool = True  # STEADY_STATE_POSITION_CORRECTION
    offset_episodes: int = 100  # NUM_EPISODES_EVAL (teacher evaluation for the offset)
    offset_window: tuple[int, int] = (250, 500)  # STEADY_STATE_POSITION_OFFSET_ESTIMATION_START / _END
    min_teacher_return: float | None = None  # None: rl-tools' SOLVED_RETURN (300) on the l2f env, no check on other tasks
    hidden_dim: int = 16  # HIDDEN_DIM
    gradient_mode: str = "rltools"
    init_student: str | None = None  # start from this student (.h5 / .pt / "foundation_policy") instead of rl-tools' init
    eval_episodes: int = 100  # held-out randomised dynamics per evaluation (NUM_EPISODES_EVAL)
    eval_registry_episodes: int = 10  # per registry model per evaluation
    eval_models: list[str] | None = None  # None: all registry models
    eval_every: int = 1
    final_eval_episodes: int = 1000
    checkpoint_every: int = 1
    max_dataset_steps: int | None = None  # cap of an aggregating (off-policy) dataset; oldest episodes dropped
    device: str = "auto"
    seed: int = 0
    log_dir: str = "runs/distill"
    plots: bool = True
    num_threads: int | None = None
    # APG fine-tuning after the epochs (eyas.distill.apg; not rl-tools): 0 iterations = rl-tools' algorithm only
    apg_iterations: int = APGConfig.iterations
    apg_envs: int = APGConfig.envs
    apg_horizon: int = APGConfig.horizon
    apg_learning_rate: float = APGConfig.learning_rate
    apg_imitation_weight: float = APGConfig.imitation_weight
    apg_barrier_weight: float = APGConfig.barrier_weight
    apg_barrier_start: float = APGConfig.barrier_start
    apg_tilt_weight: float = APGConfig.tilt_weight
    apg_grad_clip: float = APGConfig.grad_clip
    apg_eval_every: int = APGConfig.eval_every
    apg_eval_episodes: int = 256  # randomised episodes per APG evaluation (best-actor selection)

    def apg(self) -> APGConfig:
        return APGConfig(**{f.name: getattr(self, f"apg_{f.name}") for f in dataclasses.fields(APGConfig)})

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["offset_window"] = list(self.offset_window)
        return d


# ---------------------------------------------------------------------------------------------- helpers
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DistillationError(f"--device {name}: CUDA is not available in this PyTorch build / machine")
    return device


def resolve_task(task: str, backend: str = "auto", *, num_envs: int = 1024, device="cpu", seed: int = 0,
                 packages=("isaaclab_tasks",)):
    """The environment of ``task``: an `IsaacLabTask` when Isaac Lab is installed and one of the task ``packages``
    registers that id (or ``backend="isaaclab"``), else the embedded l2f env (`PointControlEnvCfg`) for
    Isaac-Quadcopter-Point-Ctrl-v0."""
    from eyas.envs import PointControlEnvCfg
    from eyas.envs.isaaclab_task import IsaacLabTask, isaaclab_installed, isaaclab_registers

    if backend not in ("auto", "embedded", "isaaclab"):
        raise DistillationError(f"--env_backend must be auto, embedded or isaaclab, got {backend!r}")
    installed = isaaclab_installed()
    if backend == "isaaclab" and not installed:
        raise DistillationError("--env_backend isaaclab: Isaac Lab is not installed (packages isaaclab, "
                                "isaaclab_tasks, isaaclab_rl)")
    packages = tuple(packages)
    if backend == "isaaclab" or (backend == "auto" and installed and isaaclab_registers(task, packages)):
        return IsaacLabTask(task, num_envs=int(num_envs), device=str(device), seed=int(seed), packages=packages)
    if task != TASK_ID:
        why = ("Isaac Lab is not installed" if not installed else
               f"not registered by {', '.join(packages)}; add its package with --isaaclab_packages")
        raise DistillationError(f"unknown --task {task!r} ({why}); the embedded env is {TASK_ID!r}")
    return PointControlEnvCfg()


def is_embedded(env_cfg) -> bool:
    """True for the embedded l2f env (per-row dynamics, registry models, position offsets, recorded flights)."""
    from eyas.envs import PointControlEnvCfg

    return isinstance(env_cfg, PointControlEnvCfg)


def atomic_save(obj, path: Path) -> None:
    """torch.save to a temporary file in the same directory, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(text: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _json_default(o):
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)


# ---------------------------------------------------------------------------------------------- evaluation
class Evaluator:
    """Held-out randomised dynamics plus registry models in one batched env (one episode per row).
    The dynamics and initial states are fixed (seeded), so epochs are compared on the same flights."""

    held_out = "randomized"

    def __init__(self, env_cfg, *, randomized: int, per_model: int, models: list[str], seed: int, device):
        from eyas import sim
        from eyas.envs import PointControlEnv

        g = torch.Generator().manual_seed(seed)
        dtype = getattr(torch, env_cfg.dtype) if isinstance(env_cfg.dtype, str) else env_cfg.dtype
        parts, self.groups = [], []
        if randomized > 0:
            parts.append(sim.sample_domain_randomized_params(randomized, g, env_cfg.domain_randomization,
                                                             dtype=dtype, device="cpu"))
            self.groups.append(("randomized", 0, randomized))
        start = randomized
        for name in models if per_model > 0 else []:
            parts.append(sim.model_params(name, dtype=dtype).expand(per_model))
            self.groups.append((name, start, start + per_model))
            start += per_model
        if not parts:
            raise DistillationError("evaluation needs eval_episodes > 0 or eval_registry_episodes > 0")
        params = sim.Params.stack(parts)
        self.seed = seed
        self.env = PointControlEnv(dataclasses.replace(env_cfg, num_envs=params.batch_size, dynamics=params.to(device),
                                                       seed=seed, device=str(device)))

    @torch.no_grad()
    def __call__(self, student: StudentPolicy) -> dict[str, dict]:
        from eyas.envs import student_policy_fn

        return self.evaluate_fn(student_policy_fn(student))

    @torch.no_grad()
    def evaluate_fn(self, policy_fn) -> dict[str, dict]:
        """Evaluate ``policy_fn(obs, reset_mask) -> actions`` (`eyas.envs.evaluate`'s interface)."""
        from eyas.envs import evaluate

        result = evaluate(policy_fn, self.env, num_episodes=self.env.num_envs, seed=self.seed)
        out = {}
        for name, a, b in self.groups:
            r, length, term = result.returns[a:b], result.lengths[a:b], result.terminated[a:b]
            out[name] = {"return_mean": float(r.mean()), "return_std": float(r.std()),
                         "episode_length_mean": float(length.mean()), "episode_length_std": float(length.std()),
                         "share_terminated": float(term.mean()), "episodes": int(b - a)}
        return out


class TaskEvaluator:
    """Evaluation on an Isaac Lab task: ``episodes`` new episodes (one per row, in chunks of the task's rows),
    reported as the group ``"task"``. The task draws the dynamics and initial states itself."""

    held_out = "task"

    def __init__(self, task, *, episodes: int):
        if episodes < 1:
            raise DistillationError("evaluation needs --eval_episodes > 0 on an Isaac Lab task")
        self.task, self.episodes, self.groups = task, int(episodes), [("task", 0, int(episodes))]

    @torch.no_grad()
    def __call__(self, student: StudentPolicy) -> dict[str, dict]:
        from eyas.envs import student_policy_fn

        return self.evaluate_fn(student_policy_fn(student))

    @torch.no_grad()
    def evaluate_fn(self, policy_fn) -> dict[str, dict]:
        returns, lengths, terminated = [], [], []
        left = self.episodes
        while left > 0:
            env = self.task.episodes(min(left, self.task.num_envs))
            n, obs = env.num_envs, env.get_observations()
            alive = torch.ones(n, dtype=torch.bool, device=env.device)
            reset = alive.clone()
            ret = torch.zeros(n, dtype=torch.float64, device=env.device)
            length = torch.zeros(n, dtype=torch.long, device=env.device)
            term = torch.zeros(n, dtype=torch.bool, device=env.device)
            for _ in range(env.max_episode_length):
                obs, rewards, dones, extras = env.step(policy_fn(obs, reset))
                reset = torch.zeros_like(reset)
                ret += rewards.to(torch.float64) * alive
                length += alive
                term |= extras["terminated"].bool() & alive
                alive &= ~dones.bool()
                if not bool(alive.any()):
                    break
            returns.append(ret.cpu()), lengths.append(length.double().cpu()), terminated.append(term.double().cpu())
            left -= n
        r, length, term = torch.cat(returns), torch.cat(lengths), torch.cat(terminated)
        return {"task": {"return_mean": float(r.mean()), "return_std": float(r.std()) if len(r) > 1 else 0.0,
                         "episode_length_mean": float(length.mean()),
                         "episode_length_std": float(length.std()) if len(r) > 1 else 0.0,
                         "share_terminated": float(term.mean()), "episodes": len(r)}}


def _teacher_policy_fn(teacher):
    """`eyas.envs.evaluate` policy function for a teacher (recurrent ones reset where episodes start)."""
    from eyas.distill.collect import select_input
    from eyas.envs import student_policy_fn

    if getattr(teacher, "is_recurrent", False):
        return student_policy_fn(teacher.policy, obs_group=teacher.obs_group)
    return lambda obs, reset_mask: teacher.act(select_input(teacher, obs))


def record_flights(student: StudentPolicy, env_cfg, device, seed: int, models=("crazyflie",), randomized: int = 3):
    """A few recorded flights (positions, actions, ...) of ``student``: randomised dynamics and registry models."""
    from eyas import sim
    from eyas.envs import PointControlEnv, evaluate, student_policy_fn

    g = torch.Generator().manual_seed(seed)
    dtype = getattr(torch, env_cfg.dtype) if isinstance(env_cfg.dtype, str) else env_cfg.dtype
    parts = [sim.sample_domain_randomized_params(randomized, g, env_cfg.domain_randomization, dtype=dtype, device="cpu")]
    parts += [sim.model_params(m, dtype=dtype) for m in models]
    labels = [f"randomized {i}" for i in range(randomized)] + list(models)
    params = sim.Params.stack(parts)
    env = PointControlEnv(dataclasses.replace(env_cfg, num_envs=params.batch_size, dynamics=params.to(device),
                                              seed=seed, device=str(device)))
    result = evaluate(student_policy_fn(student), env, num_episodes=params.batch_size, record_envs=params.batch_size,
                      seed=seed)
    flights = []
    for i, (label, traj) in enumerate(zip(labels, result.trajectories)):
        flights.append({"label": label, "return": float(result.returns[i]), "terminated": bool(result.terminated[i]),
                        **{k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in traj.items()}})
    return flights


def load_init_student(source: str, num_obs: int, num_actions: int, hidden_dim: int) -> dict:
    """State dict of the student a run starts from: an rl-tools .h5 actor (``foundation_policy``: the released RAPTOR
    policy) or an `eyas distill` .pt checkpoint (best_actor.pt, checkpoints/<epoch>/actor.pt)."""
    from eyas.rltools_h5 import RLToolsH5Error, load_rltools_h5, raptor_checkpoint_path

    path = raptor_checkpoint_path() if source == "foundation_policy" else Path(source)
    if not path.is_file():
        raise DistillationError(f"--init_student {source}: file does not exist")
    try:
        if path.suffix in (".h5", ".hdf5"):
            policy = load_rltools_h5(path)  # refuses NaN / inf parameters itself
            shape = (policy.num_obs, policy.num_actions, policy.hidden_dim)
            weights = policy.state_dict()
        else:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            shape = (saved["num_obs"], saved["num_actions"], saved["hidden_dim"])
            weights = saved["state_dict"]
            if not all(torch.is_tensor(v) and bool(torch.isfinite(v).all()) for v in weights.values()):
                raise DistillationError(f"--init_student {source}: the student's parameters contain NaN or inf")
    except (RLToolsH5Error, OSError, RuntimeError, KeyError, TypeError, pickle.UnpicklingError) as e:
        detail = ("not an eyas distill .pt checkpoint" if isinstance(e, (pickle.UnpicklingError, KeyError))
                  else f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
        raise DistillationError(f"--init_student {source}: cannot read a student from {path.name} ({detail})") from e
    if shape != (num_obs, num_actions, hidden_dim):
        raise DistillationError(f"--init_student {source}: the student maps {shape[0]} observations to {shape[1]} "
                                f"actions with {shape[2]} GRU units; this run needs {num_obs} -> {num_actions} with "
                                f"{hidden_dim}")
    return weights


# ---------------------------------------------------------------------------------------------- runner
class DistillationRunner:
    """Runs `DistillConfig` end to end; ``run()`` returns the final summary (also written to summary.json)."""

    def __init__(self, cfg: DistillConfig, teachers: list | None = None, resume: bool = False, progress: bool = True):
        self.cfg = cfg
        self.progress = progress
        self.log_dir = Path(cfg.log_dir)
        self._validate_numbers()
        if cfg.num_threads:
            torch.set_num_threads(int(cfg.num_threads))
        self.device = resolve_device(cfg.device)
        self.env_cfg = resolve_task(cfg.task, cfg.env_backend, num_envs=cfg.num_envs, device=self.device, seed=cfg.seed,
                                    packages=cfg.isaaclab_packages)
        self.embedded = is_embedded(self.env_cfg)
        if resume:
            state_path = self.log_dir / "state.pt"
            if not state_path.is_file():
                raise DistillationError(f"--resume: no complete epoch in {self.log_dir} (missing {state_path.name})")
        elif (self.log_dir / "state.pt").exists():
            raise DistillationError(f"{self.log_dir} already holds a run; pass --resume to continue it or choose "
                                    f"another --log_dir")
        if teachers is None:
            if not cfg.teacher_checkpoint:
                raise DistillationError("no teachers: pass --teacher_checkpoint FILE_OR_DIR [...]")
            teachers = load_teachers(cfg.teacher_checkpoint, self.device)
        if not self.embedded:  # l2f's motor commands live in [-1, 1]; other tasks take the mean unclipped, as rsl_rl
            for t in teachers:
                if hasattr(t, "action_clip") and not getattr(t, "is_recurrent", False):
                    t.action_clip = None
        from eyas.envs import PointControlEnv

        if self.embedded:
            probe = PointControlEnv(dataclasses.replace(self.env_cfg, num_envs=1, device=str(self.device)))
        else:
            probe = self.env_cfg.episodes(1)
        check_teachers_against_env(teachers, probe)
        self.num_obs, self.num_actions = probe.num_obs, probe.num_actions
        self.max_episode_length = int(probe.max_episode_length)
        cfg.apg().validate(self.max_episode_length)
        if cfg.apg_iterations > 0 and not self.embedded:
            raise DistillationError("--apg_iterations needs the embedded l2f env: APG differentiates through its "
                                    "simulator, which an Isaac Lab task does not expose")
        self._check_batch_fits(len(teachers))
        self.init_weights = (load_init_student(cfg.init_student, self.num_obs, self.num_actions, cfg.hidden_dim)
                             if cfg.init_student else None)
        self.bank = TeacherBank(teachers, self.device)
        self.resume = resume

    # ------------------------------------------------------------------ validation
    def _validate_numbers(self) -> None:
        c = self.cfg
        for name in ("n_epochs", "num_episodes", "batch_size", "sequence_length", "num_envs", "offset_episodes",
                     "eval_every", "checkpoint_every"):
            if int(getattr(c, name)) < 1:
                raise DistillationError(f"--{name} must be >= 1, got {getattr(c, name)}")
        if c.epoch_teacher_forcing < 0:
            raise DistillationError(f"--epoch_teacher_forcing must be >= 0, got {c.epoch_teacher_forcing}")
        if not (c.learning_rate > 0 and math.isfinite(c.learning_rate)):
            raise DistillationError(f"--learning_rate must be a positive number, got {c.learning_rate}")
        if c.gradient_mode not in ("rltools", "exact"):
            raise DistillationError(f"--gradient_mode must be 'rltools' or 'exact', got {c.gradient_mode!r}")
        a, b = c.offset_window
        if not 0 <= a < b:
            raise DistillationError(f"offset window must satisfy 0 <= start < end, got {c.offset_window}")
        if c.apg_eval_episodes < 1:
            raise DistillationError(f"--apg_eval_episodes must be >= 1, got {c.apg_eval_episodes}")

    def _check_batch_fits(self, num_teachers: int) -> None:
        c = self.cfg
        per_epoch = num_teachers * c.num_episodes * self.max_episode_length
        available = per_epoch if c.on_policy else per_epoch * c.n_epochs
        if c.max_dataset_steps is not None and not c.on_policy:
            available = min(available, c.max_dataset_steps)
        need = c.batch_size * c.sequence_length
        if available <= need:
            raise DistillationError(
                f"--batch_size {c.batch_size} x --sequence_length {c.sequence_length} = {need} steps per batch, but "
                f"the dataset can hold at most {available} steps ({num_teachers} teachers x {c.num_episodes} episodes "
                f"x {self.max_episode_length} steps{'' if c.on_policy else ' x epochs'}); rl-tools needs more than one "
                f"batch of data. Lower --batch_size / --sequence_length or raise --num_episodes.")
        if c.max_dataset_steps is not None and not c.on_policy and c.max_dataset_steps < per_epoch:
            raise DistillationError(f"--max_dataset_steps {c.max_dataset_steps} is smaller than one epoch's data "
                                    f"({per_epoch} steps)")

    # ------------------------------------------------------------------ state
    def _new_student(self) -> StudentPolicy:
        g = torch.Generator().manual_seed(self.cfg.seed)
        student = StudentPolicy(self.num_obs, self.num_actions, self.cfg.hidden_dim,
                                gradient_mode=self.cfg.gradient_mode, generator=g)
        if self.init_weights is not None:
            student.load_state_dict(self.init_weights)
        return student.to(self.device)

    def _dataset(self) -> EpisodeDataset:
        c = self.cfg
        per_epoch = len(self.bank) * c.num_episodes * self.max_episode_length
        capacity = per_epoch if c.on_policy else (c.max_dataset_steps or per_epoch * c.n_epochs)
        per_epoch_episodes = len(self.bank) * c.num_episodes
        # an aggregating dataset may hold up to one episode per step (short DAgger episodes), 24 bytes each
        episodes = per_epoch_episodes if c.on_policy else min(capacity, per_epoch_episodes * c.n_epochs)
        try:
            return EpisodeDataset(capacity, self.num_obs, self.num_actions, max_episodes=episodes, device=self.device)
        except (RuntimeError, MemoryError) as e:  # allocation failure
            need = EpisodeDataset.nbytes_for(capacity, self.num_obs, self.num_actions, episodes)
            raise DistillationError(f"cannot allocate the dataset ({capacity} steps, {need / 2**20:.0f} MiB): {e}; "
                                    f"use --on_policy or --max_dataset_steps") from e

    def _save_state(self, epoch: int) -> None:
        state = {
            "epoch": epoch, "config": self.cfg.to_dict(), "trainer": self.trainer.state_dict(),
            "generator": self.generator.get_state(), "best": self.best, "history": self.history,
            "loss_steps": self.loss_steps, "offsets": self.offsets, "teacher_eval": self.teacher_eval,
            "teachers": [getattr(t, "source", "") for t in self.bank.teachers],
        }
        if not self.cfg.on_policy:
            state["dataset"] = self.dataset.state_dict()
        if self.apg_state is not None:
            state["apg"] = self.apg_state
        atomic_save(state, self.log_dir / "state.pt")
        apg_history = self.apg_state["history"] if self.apg_state is not None else []
        atomic_write_text(json.dumps({"config": self.cfg.to_dict(), "teacher_eval": self.teacher_eval,
                                      "offsets": self.offsets.tolist(), "history": self.history,
                                      "apg": apg_history}, indent=1, default=_json_default),
                          self.log_dir / "history.json")

    # settings a resumed run must share with the run it continues (others, e.g. n_epochs or device, may change)
    RESUME_FIXED = ("task", "env_backend", "num_episodes", "batch_size", "sequence_length", "learning_rate",
                    "epoch_teacher_forcing", "on_policy", "shuffle", "position_offset_correction", "offset_episodes", "offset_window",
                    "hidden_dim", "gradient_mode", "init_student", "seed", "max_dataset_steps")
    # ... and, once its APG phase has started, these
    RESUME_FIXED_APG = ("n_epochs", "apg_envs", "apg_horizon", "apg_learning_rate", "apg_imitation_weight",
                        "apg_barrier_weight", "apg_barrier_start", "apg_tilt_weight", "apg_grad_clip")

    def _load_state(self) -> int:
        state = torch.load(self.log_dir / "state.pt", map_location="cpu", weights_only=False)
        mine = self.cfg.to_dict()
        changed = [f"{k}: {state['config'].get(k)!r} -> {mine[k]!r}" for k in self.RESUME_FIXED
                   if state["config"].get(k) != mine[k]]
        saved_apg = state.get("apg")
        if saved_apg is not None:
            changed += [f"{k}: {state['config'].get(k)!r} -> {mine[k]!r} (the run is in its APG phase)"
                        for k in self.RESUME_FIXED_APG if state["config"].get(k) != mine[k]]
        if changed:
            raise DistillationError(f"--resume: settings differ from the run in {self.log_dir}: " + "; ".join(changed))
        apg_done = saved_apg["trainer"]["iteration"] if saved_apg is not None else 0
        if int(state["epoch"]) + 1 >= self.cfg.n_epochs and apg_done >= self.cfg.apg_iterations:
            raise DistillationError(f"--resume: the run in {self.log_dir} already finished epoch {state['epoch']}"
                                    + (f" and {apg_done} APG iterations" if apg_done else "")
                                    + f"; raise --n_epochs (now {self.cfg.n_epochs}) or --apg_iterations "
                                      f"(now {self.cfg.apg_iterations}) to continue it")
        saved_sources = state.get("teachers", [])
        sources = [getattr(t, "source", "") for t in self.bank.teachers]
        if saved_sources != sources:
            raise DistillationError(f"--resume: the run in {self.log_dir} used {len(saved_sources)} other teachers "
                                    f"({saved_sources[:2]}...); pass the same --teacher_checkpoint")
        self.trainer.load_state_dict(state["trainer"])
        self.generator.set_state(state["generator"])
        self.best = state["best"]
        if self.best.get("student") is not None:
            self.best["student"] = {k: v.to(self.device) for k, v in self.best["student"].items()}
        self.history, self.loss_steps = state["history"], state["loss_steps"]
        self.offsets, self.teacher_eval = state["offsets"], state["teacher_eval"]
        if "dataset" in state:
            self.dataset.load_state_dict(state["dataset"])
        if saved_apg is not None:
            self.apg_state = saved_apg
        return int(state["epoch"]) + 1

    # ------------------------------------------------------------------ checkpoints
    def _save_actor(self, student: StudentPolicy, directory: Path, stem: str, meta: dict) -> None:
        from eyas.rltools_h5 import save_rltools_h5

        cpu = copy.deepcopy(student).to("cpu", torch.float32)
        cpu.reset()
        environment = ({"name": "l2f", "observation": "Position.OrientationRotationMatrix.LinearVelocity."
                        "AngularVelocityDelayed(0).ActionHistory(1)"} if self.embedded
                       else {"name": self.cfg.task, "backend": "isaaclab", "observation": "policy"})
        save_rltools_h5(cpu, directory / f"{stem}.h5",
                        meta={"exported_by": "eyas distill", **meta, "environment": environment})
        atomic_save({"state_dict": cpu.state_dict(), "num_obs": cpu.num_obs, "num_actions": cpu.num_actions,
                     "hidden_dim": cpu.hidden_dim, "meta": meta}, directory / f"{stem}.pt")

    # ------------------------------------------------------------------ main loop
    def run(self) -> dict:
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        c = self.cfg
        self.generator = torch.Generator().manual_seed(c.seed)
        self.trainer = Distillation(self._new_student(), learning_rate=c.learning_rate, batch_size=c.batch_size,
                                    sequence_length=c.sequence_length, shuffle=c.shuffle, device=self.device)
        self.dataset = self._dataset()
        self.best = {"return": None, "epoch": None, "student": None}
        self.history, self.loss_steps = [], []
        self.apg_state = None  # the APG phase: {"trainer", "best", "history"}
        self.apg_student = None
        if self.resume:
            start_epoch = self._load_state()
        else:
            start_epoch = 0
            self._setup_teachers()  # validates every teacher before anything is written
        models = list(c.eval_models) if c.eval_models is not None else None
        if models is None:
            from eyas.sim import MODEL_NAMES
            models = list(MODEL_NAMES)
        self.eval_models = models
        evaluator = self._evaluator(c.eval_episodes, c.eval_registry_episodes, seed=c.seed + 1_000_003)

        self.log_dir.mkdir(parents=True, exist_ok=True)
        writer = SummaryWriter(str(self.log_dir), purge_step=self.trainer.num_updates if self.resume else None)
        atomic_write_text(json.dumps(c.to_dict(), indent=1), self.log_dir / "config.json")
        offsets = self.offsets if c.position_offset_correction and self.embedded else None
        bar = tqdm(range(start_epoch, c.n_epochs), initial=start_epoch, total=c.n_epochs, desc="distill",
                   disable=True if not self.progress else None, dynamic_ncols=True)  # None: off when not a TTY
        idle_epochs = 0
        for epoch in bar:
            row = {"epoch": epoch}
            teacher_forcing = epoch < c.epoch_teacher_forcing
            if c.on_policy:
                self.dataset.clear()
            else:
                excess = (self.dataset.num_steps + len(self.bank) * c.num_episodes * self.max_episode_length
                          - self.dataset.capacity)  # room for this epoch's episodes at their longest
                if excess > 0:
                    row["dropped_steps"] = self.dataset.drop_oldest(excess)
            t0 = time.perf_counter()
            student = self.trainer.student
            student.eval()
            stats = collect(self.bank, self.env_cfg, num_episodes=c.num_episodes, num_envs=c.num_envs,
                            generator=self.generator, device=self.device,
                            student=None if teacher_forcing else student, position_offsets=offsets,
                            dataset=self.dataset)
            row["collect_s"] = time.perf_counter() - t0
            row["actor"] = "teacher" if teacher_forcing else "student"
            row["dataset_steps"], row["dataset_episodes"] = self.dataset.num_steps, self.dataset.num_episodes
            summary = stats.summary()
            row["evaluation"] = summary
            for key, tag in (("return_mean", "return/mean"), ("return_std", "return/std"),
                             ("episode_length_mean", "episode_length/mean"), ("episode_length_std", "episode_length/std"),
                             ("share_terminated", "share_terminated")):
                writer.add_scalar(f"evaluation/{tag}", summary[key], epoch)
            if not teacher_forcing and (self.best["return"] is None or summary["return_mean"] > self.best["return"]):
                self.best = {"return": summary["return_mean"], "epoch": epoch,
                             "student": {k: v.detach().clone() for k, v in student.state_dict().items()}}
            # training
            t0 = time.perf_counter()

            step_losses = []  # kept on the device: reading each one would synchronise a GPU every step

            result = self.trainer.update(self.dataset, self.generator, lambda step, loss: step_losses.append(loss))
            first_step = self.trainer.num_updates - len(step_losses) + 1
            for i, value in enumerate(torch.stack(step_losses).tolist() if step_losses else []):
                self.loss_steps.append(value)
                writer.add_scalar("loss", value, first_step + i)
            row["train_s"] = time.perf_counter() - t0
            row["loss"], row["num_batches"] = result["loss"], result["num_batches"]
            row["gradient_steps"] = self.trainer.num_updates
            writer.add_scalar("epoch/loss", result["loss"], epoch)
            if result["num_batches"] == 0:
                tqdm.write(f"epoch {epoch}: the dataset ({self.dataset.num_steps} steps) holds less than one batch; "
                           f"no training step")
                idle_epochs += 1
                if c.on_policy and not teacher_forcing and idle_epochs >= 3:
                    raise DistillationError(
                        f"training stalled: {idle_epochs} DAgger epochs in a row collected fewer steps than one batch "
                        f"({self.dataset.num_steps} < {c.batch_size} x {c.sequence_length}; the student's episodes "
                        f"end early). rl-tools' settings assume ~1000 teachers; with few teachers raise "
                        f"--num_episodes or --epoch_teacher_forcing, shorten --sequence_length, or use --on_policy false. "
                        f"Checkpoints up to epoch {epoch - 1} are complete.")
            else:
                idle_epochs = 0
            # checkpoint and evaluation of the trained actor
            if (epoch + 1) % c.checkpoint_every == 0 or epoch == c.n_epochs - 1:
                self._save_actor(self.trainer.student, self.log_dir / "checkpoints" / str(epoch), "actor",
                                 {"epoch": epoch, "gradient_steps": self.trainer.num_updates})
            if (epoch + 1) % c.eval_every == 0 or epoch == c.n_epochs - 1:
                t0 = time.perf_counter()
                self.trainer.student.eval()
                evaluation = evaluator(self.trainer.student)
                row["eval_s"] = time.perf_counter() - t0
                row["eval"] = evaluation
                for name, ev in evaluation.items():
                    writer.add_scalar(f"{name}/return/mean", ev["return_mean"], epoch)
                    writer.add_scalar(f"{name}/return/std", ev["return_std"], epoch)
                    writer.add_scalar(f"{name}/episode_length/mean", ev["episode_length_mean"], epoch)
                    writer.add_scalar(f"{name}/episode_length/std", ev["episode_length_std"], epoch)
                    writer.add_scalar(f"{name}/share_terminated", ev["share_terminated"], epoch)
            for key in ("collect_s", "train_s", "eval_s"):
                if key in row:
                    writer.add_scalar(f"timing/{key}", row[key], epoch)
            self.history.append(row)
            self._save_state(epoch)
            writer.flush()
            held_out = row.get("eval", {}).get(evaluator.held_out)
            bar.set_postfix(loss=f"{row['loss']:.4f}", ret=f"{summary['return_mean']:.0f}",
                            held_out=f"{held_out['return_mean']:.0f}" if held_out else "-")
            tqdm.write(f"epoch {epoch:4d} {row['actor']:7s} return {summary['return_mean']:7.1f} "
                       f"terminated {100 * summary['share_terminated']:5.1f}% | loss {row['loss']:.5f} "
                       f"({row['num_batches']} batches) | held-out "
                       + (f"{held_out['return_mean']:7.1f} terminated {100 * held_out['share_terminated']:5.1f}%"
                          if held_out else "-")
                       + f" | {row['collect_s']:.1f}s collect {row['train_s']:.1f}s train {row.get('eval_s', 0):.1f}s eval",
                       file=None)
        bar.close()
        if c.apg_iterations > 0:
            self._run_apg(writer)
        writer.close()
        return self._finish(evaluator)

    def _distilled_actor(self) -> tuple[dict, int, str]:
        """Weights, epoch and selection rule of rl-tools' best actor (the student of the best DAgger collection)."""
        if self.best["student"] is not None:
            return self.best["student"], self.best["epoch"], "best collection return"
        # only teacher-forcing epochs ran: no student was ever flown, keep the last one
        return self.trainer.student.state_dict(), len(self.history) - 1, "last (no DAgger epoch ran)"

    def _run_apg(self, writer) -> None:
        """APG fine-tuning of the distilled best actor (`eyas.distill.apg`), evaluated every ``apg_eval_every``
        iterations on fixed randomised dynamics and registry models; the best evaluation return is kept."""
        from tqdm import tqdm

        c = self.cfg
        evaluator = Evaluator(self.env_cfg, randomized=c.apg_eval_episodes, per_model=c.eval_registry_episodes,
                              models=self.eval_models, seed=c.seed + 1_000_003, device=self.device)
        student = self._new_student()
        apg = AnalyticPolicyGradient(student, self.bank, self.env_cfg, c.apg(), generator=self.generator,
                                     device=self.device)
        if self.apg_state is None:
            start = {k: v.detach().clone() for k, v in self._distilled_actor()[0].items()}
            student.load_state_dict(start)
            student.eval()
            first = self._apg_row(0, evaluator(student), [], 0.0)
            self.apg_state = {"history": [first],
                              "best": {"iteration": 0, "return": first["eval"][evaluator.held_out]["return_mean"],
                                       "student": start}}
        else:
            apg.load_state_dict(self.apg_state["trainer"])
        bar = tqdm(range(apg.iteration, c.apg_iterations), initial=apg.iteration, total=c.apg_iterations, desc="apg",
                   disable=True if not self.progress else None, dynamic_ncols=True)
        t0, window = time.perf_counter(), []
        for _ in bar:
            stats = apg.update()
            window.append(stats)
            for key in APG_STATS:
                writer.add_scalar(f"apg/{key}", stats[key], apg.iteration)
            bar.set_postfix(cost=f"{stats['cost']:.3f}", ended=f"{100 * stats['terminated']:.1f}%")
            if apg.iteration % c.apg_eval_every and apg.iteration < c.apg_iterations:
                continue
            train_s = time.perf_counter() - t0
            student.eval()
            t1 = time.perf_counter()
            row = self._apg_row(apg.iteration, evaluator(student), window, train_s, time.perf_counter() - t1)
            window, t0 = [], time.perf_counter()
            for name, ev in row["eval"].items():
                writer.add_scalar(f"apg/{name}/return/mean", ev["return_mean"], apg.iteration)
                writer.add_scalar(f"apg/{name}/share_terminated", ev["share_terminated"], apg.iteration)
            held_out = row["eval"][evaluator.held_out]
            if held_out["return_mean"] > self.apg_state["best"]["return"]:
                self.apg_state["best"] = {"iteration": apg.iteration, "return": held_out["return_mean"],
                                          "student": {k: v.detach().clone() for k, v in student.state_dict().items()}}
            self._save_actor(student, self.log_dir / "checkpoints" / f"apg_{apg.iteration}", "actor",
                             {"apg_iteration": apg.iteration})
            self.apg_state["history"].append(row)
            self.apg_state["trainer"] = apg.state_dict()
            self._save_state(len(self.history) - 1)
            writer.flush()
            tqdm.write(f"apg {apg.iteration:5d} cost {row['cost']:.4f} imitation {row['imitation']:.5f} "
                       f"ended in horizon {100 * row['terminated']:4.1f}% | evaluation return "
                       f"{held_out['return_mean']:7.1f} terminated {100 * held_out['share_terminated']:5.1f}% "
                       f"({held_out['episodes']} episodes) | {row['train_s']:.1f}s train {row['eval_s']:.1f}s eval")
        bar.close()
        self.apg_student = student

    @staticmethod
    def _apg_row(iteration: int, evaluation: dict, window: list, train_s: float, eval_s: float = 0.0) -> dict:
        """One row of the APG history: evaluation, and the mean training statistics since the previous row."""
        mean = {k: (sum(w[k] for w in window) / len(window) if window else None)
                for k in APG_STATS}
        return {"iteration": iteration, "eval": evaluation, **mean, "train_s": train_s, "eval_s": eval_s,
                "skipped": sum(bool(w.get("skipped")) for w in window)}

    def _evaluator(self, episodes: int, per_model: int, seed: int):
        if not self.embedded:
            return TaskEvaluator(self.env_cfg, episodes=episodes)
        return Evaluator(self.env_cfg, randomized=episodes, per_model=per_model, models=self.eval_models, seed=seed,
                         device=self.device)

    def _setup_teachers(self) -> None:
        c = self.cfg
        t0 = time.perf_counter()
        # the steady-state offset is l2f's (the first 3 policy observations are the position error)
        window = tuple(c.offset_window) if self.embedded else None
        self.offsets, stats = estimate_position_offsets(self.bank, self.env_cfg, num_episodes=c.offset_episodes,
                                                        window=window, num_envs=c.num_envs,
                                                        generator=self.generator, device=self.device)
        per_teacher = [{"name": teacher_label(t), "source": getattr(t, "source", ""),
                        "return_mean": float(stats.mean_return[i]), "episode_length_mean": float(stats.mean_length[i]),
                        "share_terminated": float(stats.share_terminated[i]), "position_offset": self.offsets[i].tolist()}
                       for i, t in enumerate(self.bank.teachers)]
        self.teacher_eval = {"summary": stats.summary(), "teachers": per_teacher, "episodes": c.offset_episodes,
                             "seconds": time.perf_counter() - t0}
        threshold = c.min_teacher_return if c.min_teacher_return is not None else (300.0 if self.embedded else None)
        weak = [(p["name"], p["return_mean"]) for p in per_teacher
                if threshold is not None and p["return_mean"] < threshold]
        if weak:
            listed = ", ".join(f"{n} ({r:.1f})" for n, r in weak[:5])
            raise DistillationError(f"{len(weak)} teacher(s) have a mean return below --min_teacher_return "
                                    f"{threshold} on their own dynamics ({c.offset_episodes} episodes): "
                                    f"{listed}; rl-tools refuses unsolved teachers")

    def _finish(self, evaluator: Evaluator) -> dict:
        c = self.cfg
        weights, best_epoch, chosen = self._distilled_actor()
        distilled = StudentPolicy(self.num_obs, self.num_actions, c.hidden_dim).to(self.device)
        distilled.load_state_dict(weights)
        distilled.eval()
        meta = {"epoch_chosen": best_epoch, "selection": chosen, "teachers": len(self.bank)}
        final = self._evaluator(c.final_eval_episodes, max(c.eval_registry_episodes, 10), seed=c.seed + 2_000_029)
        apg_summary = None
        if self.apg_state is not None:  # the APG phase ran: its best evaluation is the best actor
            best = StudentPolicy(self.num_obs, self.num_actions, c.hidden_dim).to(self.device)
            best.load_state_dict(self.apg_state["best"]["student"])
            best.eval()
            self._save_actor(distilled, self.log_dir, "distilled_actor", meta)
            apg_best = self.apg_state["best"]["iteration"]
            meta = {**meta, "apg_iteration_chosen": apg_best,
                    "selection": f"{chosen}, then APG: best evaluation return"}
            chosen = meta["selection"]
            rows = self.apg_state["history"]
            apg_summary = {"iterations": rows[-1]["iteration"], "best_iteration": apg_best,
                           "seconds": {"train_s": sum(r["train_s"] for r in rows),
                                       "eval_s": sum(r["eval_s"] for r in rows)},
                           "distilled_actor_final_eval": final(distilled)}
            last = self.apg_student
            final_meta = {"epoch": len(self.history) - 1, "apg_iteration": rows[-1]["iteration"]}
        else:
            best, last = distilled, self.trainer.student
            final_meta = {"epoch": len(self.history) - 1}
        self._save_actor(best, self.log_dir, "best_actor", meta)
        self._save_actor(last, self.log_dir, "final_actor", final_meta)
        final_eval = final(best)
        # teachers trained over randomised dynamics can fly the same held-out set: the like-for-like reference
        privileged = [t for t in self.bank.teachers if getattr(t, "params", None) is None][:3]
        if not any(name == final.held_out for name, _, _ in final.groups):
            privileged = []
        teachers_held_out = [final.evaluate_fn(_teacher_policy_fn(t))[final.held_out] for t in privileged]
        flights = record_flights(best, self.env_cfg, self.device, seed=c.seed + 3_000_017) if self.embedded else None
        teachers = self.teacher_eval["summary"]
        held_out = final_eval.get(final.held_out)
        summary = {
            "environment": ({"backend": "embedded", "task": c.task} if self.embedded else self.env_cfg.to_dict()),
            "held_out": final.held_out,
            "best_actor": str(self.log_dir / "best_actor.h5"), "best_epoch": best_epoch, "selection": chosen,
            "best_collection_return": self.best["return"],
            "teachers": {"count": len(self.bank), "return_mean": teachers["return_mean"],
                         "share_terminated": teachers["share_terminated"],
                         "episodes_each": self.teacher_eval["episodes"]},
            "final_eval": final_eval,
            "privileged_teachers_on_held_out": (
                {"teachers": len(teachers_held_out),
                 "return_mean": sum(r["return_mean"] for r in teachers_held_out) / len(teachers_held_out),
                 "share_terminated": sum(r["share_terminated"] for r in teachers_held_out) / len(teachers_held_out)}
                if teachers_held_out else None),
            "student_vs_teachers": (held_out["return_mean"] / teachers["return_mean"]
                                    if held_out and teachers["return_mean"] else None),
            "gradient_steps": self.trainer.num_updates, "epochs": len(self.history),
            "seconds": {k: sum(r.get(k, 0.0) for r in self.history) for k in ("collect_s", "train_s", "eval_s")},
            "apg": apg_summary,
        }
        summary["foundation_policy_check"] = _check_foundation_policy(self.log_dir / "best_actor.h5")
        atomic_write_text(json.dumps(summary, indent=1, default=_json_default), self.log_dir / "summary.json")
        if flights is not None:
            atomic_write_text(json.dumps(flights), self.log_dir / "flights.json")
        if c.plots:
            from eyas.distill.plots import plot_run

            summary["plots"] = [str(p) for p in plot_run(self.log_dir)]
        return summary


def _check_foundation_policy(path: Path) -> dict:
    """Load an exported actor with `foundation_policy.load` (which checks the stored example) when installed."""
    try:
        import foundation_policy
    except ImportError:
        return {"checked": False, "reason": "foundation_policy is not installed"}
    try:
        foundation_policy.load(str(path))
    except Exception as e:  # noqa: BLE001 - report whatever the loader raises
        return {"checked": True, "ok": False, "error": f"{type(e).__name__}: {e}"}
    return {"checked": True, "ok": True}
