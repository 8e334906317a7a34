"""Train PPO teachers with rsl_rl's `OnPolicyRunner` on the embedded point-control env.

Two modes:
  * per-dynamics: one teacher per fixed parameter set (registry model, l2f JSON file, or a set sampled from
    RAPTOR's randomisation); the env's dynamics never change during training;
  * privileged: one teacher over RAPTOR-randomised dynamics (redrawn every episode).
Both read the env's `teacher` observation group (noise-free state, rotor speeds and dynamics features).

A run directory holds rsl_rl's own checkpoints (`model_<it>.pt`), its TensorBoard events, `teacher.json`
(task config, rsl_rl config, l2f dynamics, training summary, evaluation) and `curve.csv` (periodic
deterministic evaluations). `TeacherRunner` and its `IterationLogger` subclass rsl_rl's runner and logger so
that evaluation, best-checkpoint selection, progress and early stops run after every logged iteration.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch
from rsl_rl.runners import OnPolicyRunner
from rsl_rl.utils.logger import Logger

from eyas.io import atomic_torch_save, atomic_write

from . import multiprocess
from . import resume as resume_state
from .base import TeacherError
from .monitor import Stop, TrainingMonitor
from .options import TrainOptions, default_train_cfg  # noqa: F401  (the options' home; re-exported)
from .widen import widen_checkpoint
from .rsl_rl_io import read_training_checkpoint

SIDECAR_FORMAT = "eyas-teacher"
SIDECAR_VERSION = 1


def hover_action(params: Any, resolution: int = 2001) -> torch.Tensor:
    """(B,) smallest action in [-1, 1] at which the rotors' mean thrust reaches weight / 4 (grid search)."""
    d = params.dynamics
    c = d.rotor_thrust_coefficients.double()  # (B, 4, 3): thrust = c0 + c1 r + c2 r^2
    share = (d.mass * torch.linalg.vector_norm(d.gravity, dim=-1)).double() / c.shape[1]
    actions = torch.linspace(-1, 1, resolution, dtype=torch.float64, device=c.device)
    low, high = d.action_limit.min.double()[:, None], d.action_limit.max.double()[:, None]
    r = low + (actions[None] + 1) / 2 * (high - low)  # (B, G) rotor speeds
    thrust = (c[:, :, None, 0] + c[:, :, None, 1] * r[:, None] + c[:, :, None, 2] * r[:, None] ** 2).mean(1)
    enough = thrust >= share[:, None]
    first = torch.where(enough.any(-1), enough.float().argmax(-1), torch.full_like(share, resolution - 1).long())
    return actions[first].float()


class IterationLogger(Logger):
    """rsl_rl `Logger` that calls `after_log(it)` once iteration `it` is logged (None: a plain `Logger`).

    `OnPolicyRunner.learn` logs right after each PPO update and before its periodic save, so the hook sees the
    updated policy and the logger's totals (`tot_time`, `tot_timesteps`) including iteration `it`; an exception
    it raises leaves `learn` without the final save."""

    after_log: Callable[[int], None] | None = None

    def log(self, it: int, *args, **kwargs) -> None:
        super().log(it, *args, **kwargs)
        if multiprocess.world_size() > 1:  # torchrun: rank 0's hook decides for every rank
            multiprocess.agreed_stop(self.after_log, it, Stop)
        elif self.after_log is not None:
            self.after_log(it)


class TeacherRunner(OnPolicyRunner):
    """`OnPolicyRunner` whose logger is an `IterationLogger` and whose checkpoints are written atomically."""

    logger: IterationLogger

    def __init__(self, env: Any, train_cfg: dict, log_dir: str | None = None, device: str = "cpu") -> None:
        super().__init__(env, train_cfg, log_dir=log_dir, device=device)
        # OnPolicyRunner builds its Logger inline; rebuild it as the subclass from the same arguments (before
        # learn() it holds nothing but empty buffers)
        self.logger = IterationLogger(log_dir=log_dir, cfg=self.cfg, env_cfg=self.env.cfg, num_envs=self.env.num_envs,
                                      is_distributed=self.is_distributed, gpu_world_size=self.gpu_world_size,
                                      gpu_global_rank=self.gpu_global_rank, device=self.device)

    def _configure_multi_gpu(self) -> None:
        if not multiprocess.configure(self):  # gloo on the CPU (rsl_rl hard-codes NCCL); else rsl_rl's own
            super()._configure_multi_gpu()

    def save(self, path: str, infos: dict | None = None) -> None:
        saved = self.alg.save()
        saved["iter"] = self.current_learning_iteration
        saved["infos"] = infos
        atomic_torch_save(path, saved)
        self.logger.save_model(path, self.current_learning_iteration)


def _quiet(enabled: bool):
    """Swallow stdout (rsl_rl's model printout, git notes and per-iteration reports) when `enabled`."""
    return contextlib.redirect_stdout(io.StringIO()) if enabled else contextlib.nullcontext()


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise TeacherError(f"--resume: cannot read {path} ({type(e).__name__})") from e


def _write_json(path: Path, obj: Any) -> None:
    # plain json.dumps (no default=): the sidecar holds only JSON types, anything else is a bug to raise on
    atomic_write(path, json.dumps(obj, indent=1))


def train_teacher(
    name: str,
    out_dir: str | os.PathLike,
    dynamics: Any,
    options: TrainOptions | None = None,
    resume: bool = False,
) -> dict | None:
    """Train one teacher into `out_dir` and return its sidecar dict (also written to `out_dir/teacher.json`;
    under torchrun only rank 0 writes and returns it, `eyas.teachers.multiprocess`).

    dynamics: "randomized" (privileged teacher), a registry model name, or an `eyas.sim.Params` batch of one.

    `teacher.json` is written three times: with `"training": {"status": "running"}` before training, with the
    training summary and selected checkpoint after it, and with the final `"evaluation"` of that checkpoint
    (`opts.final_eval_episodes` episodes, env and episode seed `opts.seed + 20000`). Training envs use seed
    `opts.seed`, periodic evaluations an env with seed `opts.seed + 10000` and episode seed `opts.seed + it`.
    resume: continue the killed run in `out_dir` exactly (`eyas.teachers.resume`); `options` must be its own.
    """
    opts = options or TrainOptions()
    opts = replace(opts, device=multiprocess.rank_device(opts.device))  # torchrun: cuda -> cuda:LOCAL_RANK
    multiprocess.refuse_resume(resume)
    if opts.select not in ("best", "last"):
        raise TeacherError(f"select must be 'best' or 'last', got {opts.select!r}")
    out = Path(out_dir)
    created = not out.exists()
    if resume and created:
        raise TeacherError(f"--resume: {out} does not exist")
    start = read_training_checkpoint(Path(opts.init_checkpoint)) if opts.init_checkpoint is not None else None
    saved = resume_state.load(out) if resume else None  # both read, or refused, before any work or write
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(opts.seed)

    privileged, params = _resolve_dynamics(dynamics)
    env_cfg, env, eval_env = _envs(privileged, params, opts)
    train_cfg = copy.deepcopy(opts.train_cfg) | {"run_name": name}
    train_cfg["obs_groups"] = {"actor": [opts.obs_group], "critic": [opts.obs_group]}
    if start is not None:  # a teacher of the narrower "teacher" group starts a "privileged" one: new inputs at zero
        start = widen_checkpoint(start, _group_width(env, opts.obs_group))
    runner = _build_runner(env, train_cfg, out, created, opts, start)
    if multiprocess.rank() != 0:  # torchrun: rank 0 evaluates and writes; the others train alongside it
        return multiprocess.follow_main(runner, opts.max_iterations, Stop)

    sidecar = _initial_sidecar(name, privileged, params, env, env_cfg, train_cfg, opts)
    if resume:
        resume_state.check_same_run(_read_json(out / "teacher.json"), sidecar, out)
    _write_json(out / "teacher.json", sidecar)

    monitor = TrainingMonitor(name, runner, eval_env, out, opts)
    if resume:
        resume_state.restore(saved, runner, env, monitor)
    elif opts.init_checkpoint is not None:  # the starting point competes in the "best" selection
        monitor.evaluate(runner.current_learning_iteration - 1)
    sidecar["training"] = _train_and_select(runner, monitor, opts, resume)
    sidecar["checkpoint"] = f"model_{sidecar['training']['selected_iteration']}.pt"
    _write_json(out / "teacher.json", sidecar)
    sidecar["evaluation"] = _final_evaluation(out, env_cfg, opts)
    _write_json(out / "teacher.json", sidecar)
    return sidecar


def _train_and_select(runner: TeacherRunner, monitor: TrainingMonitor, opts: TrainOptions, resume: bool) -> dict:
    """Train (`_learn`), evaluate the last iteration if it was not, select the teacher: the sidecar's "training"."""
    stopped_by = _learn(runner, monitor, opts, resume)
    train_time, wall_time = runner.logger.tot_time, monitor.wall_time()
    if not monitor.curve or monitor.curve[-1]["iteration"] != runner.current_learning_iteration:
        monitor.evaluate(runner.current_learning_iteration)
    if runner.logger.writer is not None and hasattr(runner.logger.writer, "close"):
        runner.logger.writer.close()
    return {
        "status": "done",
        "stopped_by": stopped_by,
        "iterations": runner.current_learning_iteration + 1,
        "env_steps": runner.logger.tot_timesteps,
        "train_time_s": round(train_time, 1),
        "eval_time_s": round(monitor.eval_time, 1),
        "wall_time_s": round(wall_time, 1),
        "torch_threads": torch.get_num_threads(),
        "selection": opts.select,
        "selected_iteration": monitor.selected_iteration(),
        "curve": "curve.csv",
    }


def _envs(privileged: bool, params: Any, opts: TrainOptions) -> tuple[Any, Any, Any]:
    """(config, training env, evaluation env) of a teacher of these dynamics."""
    from eyas.envs import PointControlEnv, PointControlEnvCfg

    env_cfg = PointControlEnvCfg(num_envs=opts.num_envs, device=opts.device, seed=opts.seed + multiprocess.rank(),
                                 dynamics="randomized" if privileged else params,
                                 privileged=opts.obs_group == "privileged", **opts.env_overrides)
    return env_cfg, PointControlEnv(env_cfg), PointControlEnv(env_cfg, num_envs=opts.eval_envs, seed=opts.seed + 10_000)


def _group_width(env: Any, group: str) -> int:
    return int(env.num_privileged_obs if group == "privileged" else env.num_teacher_obs)


def _resolve_dynamics(dynamics: Any) -> tuple[bool, Any]:
    """(privileged, params): ("randomized", None) -> (True, None); a registry name -> its `Params`; a `Params`
    batch -> itself; anything else -> (False, None), left for `PointControlEnvCfg` to judge."""
    from eyas.sim import Params, model_params

    privileged = isinstance(dynamics, str) and dynamics == "randomized"
    if isinstance(dynamics, str) and not privileged:
        return False, model_params(dynamics)
    if isinstance(dynamics, Params):
        return False, dynamics
    return privileged, None


def _build_runner(env: Any, train_cfg: dict, out: Path, created: bool, opts: TrainOptions,
                  start: dict | None) -> TeacherRunner:
    """A `TeacherRunner` logging into `out`, its actor either loaded from `start` (`opts.init_checkpoint`, read by
    `read_training_checkpoint`: rsl_rl's own loader would unpickle it) or (with `opts.hover_init`) started near
    hover; on a checkpoint of another architecture `out` is removed again if this run `created` it."""
    with _quiet(opts.quiet):  # rsl_rl prints the models and git notes; the progress bar (stderr) replaces that
        runner = TeacherRunner(env, train_cfg, log_dir=str(out), device=opts.device)

    if start is not None:
        # fine-tuning: the committed teachers carry no optimizer state, so Adam starts afresh; iterations continue
        # after the loaded one (rsl_rl would repeat its number), so model_<it>.pt names stay unique
        try:
            runner.alg.load(start, {"actor": True, "critic": True}, strict=True)
        except (RuntimeError, KeyError) as e:
            if created:
                shutil.rmtree(out, ignore_errors=True)
            raise TeacherError(f"--init_checkpoint {opts.init_checkpoint}: not an rsl_rl checkpoint of this "
                               f"actor/critic architecture ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from e
        runner.current_learning_iteration = start["iter"] + 1
    elif opts.hover_init:  # a policy that starts near hover survives long enough to learn from (PPO explores locally)
        hover = float(hover_action(env.params).mean())
        output_layer = runner.alg.get_policy().mlp[-1]
        with torch.no_grad():
            output_layer.weight.mul_(0.01)
            output_layer.bias.fill_(hover)
    return runner


def _initial_sidecar(name: str, privileged: bool, params: Any, env: Any, env_cfg: Any, train_cfg: dict,
                     opts: TrainOptions) -> dict[str, Any]:
    """`teacher.json` before training: everything but the checkpoint, training summary and evaluation."""
    return {
        "format": SIDECAR_FORMAT,
        "version": SIDECAR_VERSION,
        "name": name,
        "mode": "privileged" if privileged else "per-dynamics",
        "obs_group": opts.obs_group,
        "num_obs": _group_width(env, opts.obs_group),
        "num_actions": int(env.num_actions),
        "checkpoint": None,
        "actor": train_cfg["actor"],
        "train_cfg": train_cfg,
        "env_cfg": env_cfg.to_dict() | {"dynamics": "randomized" if privileged else "fixed (see 'dynamics')"},
        "dynamics": None if privileged else params.to_dict(),
        "options": {k: v for k, v in vars(opts).items() if k not in ("train_cfg", "env_overrides")},
        "training": {"status": "running"},
    }


def _learn(runner: TeacherRunner, monitor: TrainingMonitor, opts: TrainOptions, resume: bool) -> str:
    """`runner.learn` up to `opts.max_iterations` iterations after the first with `monitor` after every one;
    returns what ended it: "iterations", or the `Stop` reason ("solved", "time budget"), in which case the last
    iteration is saved here (learn() was interrupted before its own final save). A resumed run keeps its episode
    counters (no random episode lengths) and runs what is left."""
    runner.logger.after_log = monitor.after_iteration
    left = monitor.first_iteration + opts.max_iterations - runner.current_learning_iteration
    if left <= 0:  # killed after its last iteration: only the selection and the final evaluation remain
        runner.current_learning_iteration -= 1
        runner.logger.writer = None
        monitor.close()
        return "iterations"
    try:
        with _quiet(opts.quiet):
            runner.learn(left, init_at_random_ep_len=not resume)
    except Stop as stop:
        if runner.logger.writer is not None:
            runner.save(str(monitor.out / f"model_{runner.current_learning_iteration}.pt"))
            runner.logger.stop_logging_writer()
        return stop.reason
    finally:
        monitor.close()
    return "iterations"


def _final_evaluation(out: Path, env_cfg: Any, opts: TrainOptions) -> dict:
    """Evaluate the selected checkpoint through `load_teacher` (the loader distillation uses) on episodes not used
    for selection: `opts.final_eval_episodes` of them, env and episode seed `opts.seed + 20000`."""
    from eyas.envs import PointControlEnv

    from .evaluate import evaluate_actor
    from .loading import load_teacher

    teacher = load_teacher(out, device=opts.device)
    final_env = PointControlEnv(env_cfg, num_envs=min(opts.final_eval_episodes, 1024), seed=opts.seed + 20_000)
    final = evaluate_actor(teacher, final_env, opts.final_eval_episodes, seed=opts.seed + 20_000)
    return final | {"seed": opts.seed + 20_000}
