"""`DistillConfig`: every setting of a distillation run, written once.

Each field carries its CLI help and whether ``--resume`` may change it; `eyas distill`'s flags are derived from
these fields (`flag_table`), the flag name being the field name (``apg_<name>`` for the APG part). Defaults are
rl-tools' post-training (src/foundation_policy/post_training/config.h). ``to_dict()`` is the flat, flag-named
form written to config.json and state.pt (the same form as before the nested layout, so older runs resume).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eyas.cli_args import DEVICE_HELP, resolve_device
from eyas.distill.dataset import DistillationError
from eyas.envs import TASK_ID

FIXED, FIXED_IN_APG = "fixed", "fixed in APG"  # what --resume may not change: ever / once APG has started


def setting(default: Any = None, help: str = "", *, resume: str | None = None, flag: bool = True,
            factory=None, **argparse_kwargs) -> Any:
    """A config field with its CLI help (``flag=False``: no CLI flag), its resume rule and extra argparse options."""
    metadata = {"help": help, "resume": resume, "flag": flag, "argparse": argparse_kwargs}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class CollectionConfig:
    """What is flown each epoch (rl-tools' gather_epoch) and how teachers are checked."""

    num_envs: int = setting(1024, "environment rows flown in parallel")
    num_episodes: int = setting(10, "episodes per teacher and epoch", resume=FIXED)
    epoch_teacher_forcing: int = setting(10, "epochs in which the teacher flies (behaviour cloning) before DAgger",
                                         resume=FIXED)
    on_policy: bool = setting(True, "rebuild the dataset every epoch (otherwise aggregate)", resume=FIXED)
    position_offset_correction: bool = setting(
        True, "subtract each teacher's steady-state position offset from the student's stored positions", resume=FIXED)
    offset_episodes: int = setting(100, "teacher episodes for the steady-state offset / solved check", resume=FIXED)
    offset_window: tuple[int, int] = setting((250, 500), "steps of the steady-state offset estimate", resume=FIXED,
                                             flag=False)
    min_teacher_return: float | None = setting(
        None, "refuse teachers whose mean return is lower (default: rl-tools' SOLVED_RETURN 300 on the l2f env, no "
              "check on Isaac Lab tasks)", type=float)
    max_dataset_steps: int | None = setting(
        None, "cap of an aggregating dataset (oldest episodes dropped); default: all epochs", resume=FIXED, type=int)

    def validate(self) -> None:
        _at_least(self, 1, "num_envs", "num_episodes", "offset_episodes")
        _at_least(self, 0, "epoch_teacher_forcing")
        if self.max_dataset_steps is not None:
            _at_least(self, 1, "max_dataset_steps")
        if self.min_teacher_return is not None and math.isnan(self.min_teacher_return):
            raise DistillationError("--min_teacher_return must be a number, got nan")
        a, b = self.offset_window
        if not 0 <= a < b:
            raise DistillationError(f"offset window must satisfy 0 <= start < end, got {self.offset_window}")


@dataclass
class TrainingConfig:
    """The student and its imitation updates (rl-tools' post-training step)."""

    n_epochs: int = setting(1000, "epochs (N_EPOCH); 0 with --init_student and --apg_iterations: APG only",
                            resume=FIXED_IN_APG)
    batch_size: int = setting(64, "sequences per batch", resume=FIXED)
    sequence_length: int = setting(500, "steps per sequence; 1 = MLP-style batches of single steps", resume=FIXED)
    learning_rate: float = setting(1e-4, "Adam step size (alpha)", resume=FIXED)
    shuffle: bool = setting(True, "shuffle episodes before packing batches", resume=FIXED)
    hidden_dim: int = setting(16, "GRU units (HIDDEN_DIM)", resume=FIXED, flag=False)
    gradient_mode: str = setting("rltools", "GRU gradients as rl-tools computes them, or exact autograd (learns the "
                                 "initial state)", resume=FIXED, choices=("rltools", "exact"))
    init_student: str | None = setting(
        None, "start from this student instead of rl-tools' initialisation: an rl-tools .h5 actor, an eyas distill "
              ".pt (best_actor.pt), or foundation_policy (the released RAPTOR policy)", resume=FIXED, metavar="PATH")

    def validate(self) -> None:
        _at_least(self, 0, "n_epochs")
        _at_least(self, 1, "batch_size", "sequence_length")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise DistillationError(f"--learning_rate must be a positive number, got {self.learning_rate}")
        if self.gradient_mode not in ("rltools", "exact"):
            raise DistillationError(f"--gradient_mode must be 'rltools' or 'exact', got {self.gradient_mode!r}")


@dataclass
class EvaluationConfig:
    """Held-out evaluations during the run and of the final actors."""

    eval_episodes: int = setting(100, "held-out randomised-dynamics episodes per evaluation")
    eval_registry_episodes: int = setting(10, "episodes per registry model per evaluation (0: none)")
    eval_models: list[str] | None = setting(None, "registry models to evaluate on (default: all)", nargs="*")
    eval_every: int = setting(1, "evaluate every N epochs")
    final_eval_episodes: int = setting(1000, "held-out randomised episodes for the best actor's final evaluation")
    final_scorecard_episodes: int = setting(0, "episodes per group of a final scorecard: every case of eyas "
                                            "evaluate, the best actor beside RAPTOR (embedded env; 0: none; the "
                                            "recipes fly 128)")

    def validate(self) -> None:
        _at_least(self, 1, "eval_every", "eval_episodes", "final_eval_episodes")
        _at_least(self, 0, "final_scorecard_episodes")
        _at_least(self, 0, "eval_registry_episodes")


@dataclass
class APGConfig:
    """APG fine-tuning after the epochs (`eyas.distill.apg`; not rl-tools), flags ``--apg_<name>``."""

    iterations: int = setting(0, "APG steps after the distillation epochs (0: rl-tools' algorithm only)")
    env: list[str] | None = setting(
        None, "the MDPs of APG's flights in turn, env presets (raptor, robust, mixed, smooth; docs/environment.md), "
              "each for its --apg_env_steps, then the run's (--env) (default: the run's)", nargs="+",
        choices=("raptor", "robust", "mixed", "smooth"), resume=FIXED_IN_APG)
    env_steps: list[int] | None = setting(
        None, "APG steps each --apg_env flies, in turn (default: the last one flies every step left)", nargs="+",
        type=int, resume=FIXED_IN_APG)
    # on a CPU a step with 1024 episodes costs little more than with 256 (op overhead)
    envs: int = setting(1024, "episodes flown per APG step", resume=FIXED_IN_APG)
    horizon: int = setting(200, "steps flown per episode", resume=FIXED_IN_APG)
    window: int | None = setting(
        None, "steps per Adam update: each window of the flights is differentiated through its own steps, the "
              "flights carry on (truncated backpropagation; default: one window, the whole horizon)",
        resume=FIXED_IN_APG, type=int)
    window_steps: int | None = setting(
        None, "APG steps that use --apg_window; the later ones differentiate through the whole horizon (default: "
              "all steps)", resume=FIXED_IN_APG, type=int)
    learning_rate: float = setting(1e-3, "Adam step size of APG", resume=FIXED_IN_APG)
    learning_rate_final: float | None = setting(
        None, "step size at the last APG step, reached by a cosine decay from --apg_learning_rate (default: constant)",
        resume=FIXED_IN_APG, type=float)
    imitation_weight: float = setting(1.0, "weight of the teacher-imitation term in the APG loss",
                                      resume=FIXED_IN_APG)
    barrier_weight: float = setting(100.0, "weight of the barrier before the termination thresholds",
                                    resume=FIXED_IN_APG)
    barrier_start: float = setting(0.75, "share of each termination threshold where the barrier starts",
                                   resume=FIXED_IN_APG)
    tilt_weight: float = setting(0.2, "weight of the tilt cost 1 - R_zz", resume=FIXED_IN_APG)
    steady_weight: float = setting(0.0, "extra weight of |p - target| from step --apg_steady_start on (steady "
                                   "state; 0: l2f's position cost only)", resume=FIXED_IN_APG)
    steady_start: int = setting(300, "first step of the steady-state term (with --apg_horizon 500: the last 2 s)",
                                resume=FIXED_IN_APG)
    grad_clip: float = setting(1.0, "gradient-norm clip", resume=FIXED_IN_APG)
    log_cost: bool = setting(False, "each step's cost through log(1 + cost): a row near a crash steers the step no "
                             "more than one that hovers (for disturbed envs, where some episodes are hopeless)",
                             resume=FIXED_IN_APG)
    average_decay: float | None = setting(
        None, "evaluate, select and export an exponential moving average of the student's weights after each APG "
              "step (torch.optim.swa_utils, this decay per step) instead of the last weights; training continues "
              "on the last weights (default: no average)", resume=FIXED_IN_APG, type=float)
    registry_share: float = setting(0.0, "share of each step's episodes flown on the registry models in turn "
                                    "instead of randomised dynamics (privileged teachers; the models' evaluation "
                                    "then flies dynamics APG has seen)", resume=FIXED_IN_APG)
    eval_every: int = setting(25, "evaluate (and select the best actor) every N APG steps")
    eval_episodes: int = setting(128, "episodes per group of the scorecard's selection cases in each APG evaluation "
                                 "(the selection's paired tests want >= 100)")
    select_cases: list[str] | None = setting(
        None, "scorecard cases (CASE, or CASE/GROUP for one group) an APG evaluation flies (default: hover, "
              "track_5s, track_10s, delay_10ms, delay_20ms, wind, gust, weak_motor, noise_4x; "
              "eyas.scorecard.selection)", nargs="*", resume=FIXED_IN_APG)

    def validate(self) -> None:
        _at_least(self, 0, "iterations", "steady_start")
        _at_least(self, 1, "envs", "horizon", "eval_every", "eval_episodes")
        if self.window is not None and self.window < 1:
            raise DistillationError(f"--apg_window must be >= 1, got {self.window}")
        self._validate_env_schedule()
        if self.window_steps is not None and self.window_steps < 0:
            raise DistillationError(f"--apg_window_steps must be >= 0, got {self.window_steps}")
        for name in ("learning_rate", "grad_clip") + (("learning_rate_final",) if self.learning_rate_final else ()):
            value = getattr(self, name)
            if not (value > 0 and value < float("inf")):
                raise DistillationError(f"--apg_{name} must be a positive number, got {value}")
        for name in ("imitation_weight", "barrier_weight", "tilt_weight", "steady_weight"):
            value = getattr(self, name)
            if not (value >= 0 and value < float("inf")):
                raise DistillationError(f"--apg_{name} must be >= 0, got {value}")
        if self.average_decay is not None and not 0 < self.average_decay < 1:
            raise DistillationError(f"--apg_average_decay must be in (0, 1), got {self.average_decay}")
        if not 0 <= self.registry_share < 1:
            raise DistillationError(f"--apg_registry_share must be in [0, 1), got {self.registry_share}")
        if not 0 < self.barrier_start <= 1:
            raise DistillationError(f"--apg_barrier_start must be in (0, 1], got {self.barrier_start}")
        if self.select_cases is not None:
            from eyas.scorecard.selection import selection_cases

            try:
                selection_cases(list(self.select_cases))
            except ValueError as e:
                raise DistillationError(f"--apg_select_cases: {e}") from e

    def _validate_env_schedule(self) -> None:
        envs, steps = self.env or [], self.env_steps or []
        if steps and not envs:
            raise DistillationError("--apg_env_steps needs --apg_env")
        if any(n < 0 for n in steps):
            raise DistillationError(f"--apg_env_steps must be >= 0, got {steps}")
        if envs and len(steps) not in (len(envs) - 1, len(envs)):
            raise DistillationError(f"--apg_env_steps: one count per --apg_env (the last one may be left out), got "
                                    f"{len(steps)} for {len(envs)}")

    def flight_mdp(self, iteration: int) -> str | None:
        """The env preset APG step ``iteration`` (0-based) flies (`--apg_env` in turn); None: the run's MDP."""
        envs, steps = self.env or [], list(self.env_steps or [])
        for env, count in zip(envs, steps + [None] * (len(envs) - len(steps))):
            if count is None or iteration < count:
                return env
            iteration -= count
        return None

    def check_horizon(self, max_episode_length: int) -> None:
        if self.horizon > max_episode_length:
            raise DistillationError(f"--apg_horizon {self.horizon} exceeds the episode length {max_episode_length}")


@dataclass
class DistillConfig:
    """All settings of a distillation run, in parts; `from_flags` builds one from flag-named values."""

    teacher_checkpoint: list[str] = setting(
        help="teacher file(s) (.pt rsl_rl / .h5 rl-tools), teacher run directories, or a directory of teachers (one "
             "teacher per dynamics set, as RAPTOR)", factory=list, nargs="+", metavar="PATH")
    task: str = setting(TASK_ID, "environment id (the embedded env unless Isaac Lab provides it)", resume=FIXED)
    env: str = setting("teacher", "the embedded env's MDP: 'teacher' (the one the first teacher was trained in, as its "
                       "teacher.json records), 'raptor' (RAPTOR's: hover to a point, undisturbed), 'robust' (moving "
                       "references, actuation delay, wind, gusts, weak motors, observation noise), 'mixed' (half "
                       "RAPTOR's, half disturbed) or 'smooth' (mixed's references and wind; docs/environment.md)",
                       resume=FIXED, choices=("teacher", "raptor", "robust", "mixed", "smooth"))
    env_backend: str = setting("auto", "auto: Isaac Lab when it is installed and registers --task, else the embedded "
                               "l2f env", resume=FIXED, choices=("auto", "embedded", "isaaclab"))
    isaaclab_packages: list[str] = setting(
        help="packages that register Isaac Lab tasks (imported once the simulator runs): isaaclab_tasks plus your "
             "extension's, e.g. my_extension.tasks", factory=lambda: ["isaaclab_tasks"], nargs="+", metavar="PACKAGE")
    collection: CollectionConfig = field(default_factory=CollectionConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    apg: APGConfig = field(default_factory=APGConfig)
    checkpoint_every: int = setting(1, "checkpoint (the actor, and the run state --resume continues from) every N "
                                       "epochs and at the last")
    device: str = setting("auto", DEVICE_HELP)
    seed: int = setting(0, "seed of everything random in the run (one CPU generator)", resume=FIXED)
    log_dir: str = setting("runs/distill", "run directory (checkpoints, TensorBoard, plots)")
    plots: bool = setting(True, "write training.png and flights.png at the end")
    num_threads: int | None = setting(None, "torch CPU threads (default: torch's choice)", type=int)

    PARTS = {"collection": "", "training": "", "evaluation": "", "apg": "apg_"}  # part -> flag prefix

    def validate(self) -> None:
        """Every number and choice, checked before anything is built (the env-dependent checks come later)."""
        _at_least(self, 1, "checkpoint_every")
        if self.num_threads is not None:
            _at_least(self, 1, "num_threads")
        resolve_device(self.device)
        for part in self.PARTS:
            try:
                getattr(self, part).validate()
            except ValueError as e:
                raise DistillationError(str(e)) from e
        if self.training.n_epochs == 0 and not (self.training.init_student and self.apg.iterations > 0):
            raise DistillationError("--n_epochs 0 fine-tunes a given student only: it needs --init_student and "
                                    "--apg_iterations > 0 (otherwise --n_epochs must be >= 1)")

    def to_dict(self) -> dict:
        """Flat, flag-named settings (config.json)."""
        out = {}
        for name, (part, key) in flag_paths().items():
            value = getattr(getattr(self, part), key) if part else getattr(self, key)
            out[name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_flags(cls, **values) -> "DistillConfig":
        """A config from flag-named values (``num_envs=..., apg_iterations=...``); unknown names are an error."""
        paths = flag_paths()
        unknown = sorted(set(values) - set(paths))
        if unknown:
            raise DistillationError(f"unknown distillation settings: {', '.join(unknown)}")
        top, parts = {}, {part: {} for part in cls.PARTS}
        for name, value in values.items():
            part, key = paths[name]
            if name == "offset_window" and value is not None:
                value = tuple(value)
            (parts[part] if part else top)[key] = value
        built = {part: _part_class(part)(**kwargs) for part, kwargs in parts.items()}
        return cls(**top, **built)

    def with_absolute_paths(self) -> "DistillConfig":
        """Teacher and starting-student paths made absolute, so a run resumes from any working directory."""
        def absolute(path):
            return path if path in (None, "foundation_policy") else str(Path(path).resolve())
        return self.replace(teacher_checkpoint=[absolute(p) for p in self.teacher_checkpoint],
                            init_student=absolute(self.training.init_student))

    def replace(self, **values) -> "DistillConfig":
        """A copy with flag-named values changed."""
        return DistillConfig.from_flags(**(self.to_dict() | values))


def _part_class(part: str):
    return {"collection": CollectionConfig, "training": TrainingConfig, "evaluation": EvaluationConfig,
            "apg": APGConfig}[part]


def flag_paths() -> dict[str, tuple[str | None, str]]:
    """Flag name -> (part or None, field name), in CLI order."""
    out = {}
    for f in dataclasses.fields(DistillConfig):
        if f.name in DistillConfig.PARTS:
            prefix = DistillConfig.PARTS[f.name]
            out.update({prefix + g.name: (f.name, g.name) for g in dataclasses.fields(_part_class(f.name))})
        else:
            out[f.name] = (None, f.name)
    return out


def flag_table() -> list[tuple[str, dataclasses.Field]]:
    """(flag name, field) of every setting, in CLI order; ``field.metadata`` holds help, resume rule, argparse."""
    fields = {f.name: f for f in dataclasses.fields(DistillConfig)}
    fields.update({f"{part}.{g.name}": g for part in DistillConfig.PARTS
                   for g in dataclasses.fields(_part_class(part))})
    return [(name, fields[f"{part}.{key}" if part else key]) for name, (part, key) in flag_paths().items()]


def resume_fixed(apg_started: bool) -> list[str]:
    """Flag names a resumed run must share with the run it continues (more once its APG phase has started)."""
    rules = {FIXED, FIXED_IN_APG} if apg_started else {FIXED}
    return [name for name, f in flag_table() if f.metadata.get("resume") in rules]


def _at_least(cfg, low: int, *names: str) -> None:
    prefix = "apg_" if isinstance(cfg, APGConfig) else ""
    for name in names:
        if int(getattr(cfg, name)) < low:
            raise DistillationError(f"--{prefix}{name} must be >= {low}, got {getattr(cfg, name)}")


# ---------------------------------------------------------------------------------------------- where it runs
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
    return PointControlEnvCfg(device=str(device))


def run_mdp(env_cfg, choice: str, teachers: list):
    """An env config whose MDP is a setting (the embedded env) with the MDP the run flies (``--env``): the first
    teacher's (its teacher.json's ``env_cfg``; RAPTOR's for teachers without one), or a preset; with the
    "privileged" observation group when a teacher reads it."""
    from eyas.envs import PointControlEnvCfg

    if choice == "teacher":
        recorded = next((t.meta["env_cfg"] for t in teachers if "env_cfg" in getattr(t, "meta", {})), None)
        source = PointControlEnvCfg.from_dict(recorded) if recorded is not None else "raptor"
    else:
        source = choice
    privileged = any(getattr(t, "obs_group", None) == "privileged" for t in teachers)
    return dataclasses.replace(env_cfg.with_mdp(source), privileged=privileged)
