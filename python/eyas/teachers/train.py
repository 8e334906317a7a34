"""Train PPO teachers with rsl_rl's `OnPolicyRunner` on the embedded point-control env.

Two modes:
  * per-dynamics: one teacher per fixed parameter set (registry model, l2f JSON file, or a set sampled from
    RAPTOR's randomisation); the env's dynamics never change during training;
  * privileged: one teacher over RAPTOR-randomised dynamics (redrawn every episode).
Both read the env's `teacher` observation group (noise-free state, rotor speeds and dynamics features).

A run directory holds rsl_rl's own checkpoints (`model_<it>.pt`), its TensorBoard events, `teacher.json`
(task config, rsl_rl config, l2f dynamics, training summary, evaluation) and `curve.csv` (periodic
deterministic evaluations).
"""
from __future__ import annotations

import contextlib
import copy
import csv
import io
import json
import math
import os
import pickle
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .base import TeacherError

SIDECAR_FORMAT = "eyas-teacher"
SIDECAR_VERSION = 1


def default_train_cfg() -> dict:
    """rsl_rl (5.x) runner config for a point-control teacher."""
    return {
        "num_steps_per_env": 32,
        "save_interval": 100,
        "obs_groups": {"actor": ["teacher"], "critic": ["teacher"]},
        "algorithm": {
            "class_name": "PPO",
            "num_learning_epochs": 5,
            "num_mini_batches": 4,
            "clip_param": 0.2,
            "gamma": 0.99,
            "lam": 0.95,
            "value_loss_coef": 1.0,
            "entropy_coef": 0.0,
            "learning_rate": 1e-3,
            "max_grad_norm": 1.0,
            "schedule": "adaptive",
            "desired_kl": 0.01,
            # returns here are O(100) (1.5 per step, -100 on termination): PPO's clipped value loss (+-0.2 per
            # update) would make the critic far too slow to follow them
            "use_clipped_value_loss": False,
        },
        "actor": {
            "class_name": "MLPModel",
            "hidden_dims": [64, 64],
            "activation": "elu",
            "obs_normalization": True,
            # small initial noise: with std 0.5 the d_action cost makes every step's reward negative, and
            # crashing early (-100) beats surviving; the floor keeps PPO exploring (without it the std collapses
            # to ~0.01 and the policy drifts)
            "distribution_cfg": {"class_name": "GaussianDistribution", "init_std": 0.15, "std_type": "log",
                                 "std_range": [0.05, 10.0]},
        },
        "critic": {"class_name": "MLPModel", "hidden_dims": [128, 128], "activation": "elu", "obs_normalization": True},
        "logger": "tensorboard",
        "check_for_nan": True,
    }


@dataclass
class TrainOptions:
    """Run-level options (the PPO hyper-parameters live in the rsl_rl config)."""

    num_envs: int = 1024
    max_iterations: int = 1000
    max_minutes: float | None = 15.0  # budget of rsl_rl collection + learning time (evaluations not counted)
    seed: int = 0
    device: str = "cpu"
    eval_interval: int = 25  # iterations between deterministic evaluations (0: only at the end)
    eval_envs: int = 512  # one episode per env during training
    final_eval_episodes: int = 1024
    stop_when_solved: bool = False
    solved_terminated: float = 0.01
    solved_position_error: float = 0.05
    quiet: bool = True  # replace rsl_rl's per-iteration report with a progress bar
    hover_init: bool = True  # start the actor near the hover command (output bias) with small output weights
    select: str = "best"  # teacher checkpoint: "best" deterministic eval return seen during training, or "last"
    init_checkpoint: str | None = None  # continue from this rsl_rl checkpoint (actor, critic, iteration; fresh optimizer)
    train_cfg: dict = field(default_factory=default_train_cfg)
    env_overrides: dict = field(default_factory=dict)


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


class _Stop(Exception):
    """Raised from the logging hook to end `OnPolicyRunner.learn` early."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` via a temporary file in the same directory and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_torch_save(obj: Any, path: Path) -> None:
    """`torch.save` via a temporary file in the same directory and a rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _make_runner_class():
    from rsl_rl.runners import OnPolicyRunner

    class AtomicSaveRunner(OnPolicyRunner):
        """`OnPolicyRunner` whose checkpoints are written atomically (temporary file, then rename)."""

        def save(self, path: str, infos: dict | None = None) -> None:
            saved = self.alg.save()
            saved["iter"] = self.current_learning_iteration
            saved["infos"] = infos
            atomic_torch_save(saved, Path(path))
            self.logger.save_model(path, self.current_learning_iteration)

    return AtomicSaveRunner


def _progress(total: int, desc: str):
    try:
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="it", dynamic_ncols=True)
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None


def train_teacher(
    name: str,
    out_dir: str | os.PathLike,
    dynamics: Any,
    options: TrainOptions | None = None,
) -> dict:
    """Train one teacher into `out_dir` and return its sidecar dict (also written to `out_dir/teacher.json`).

    dynamics: "randomized" (privileged teacher), a registry model name, or an `eyas.sim.Params` batch of one.
    """
    from eyas.envs import PointControlEnv, PointControlEnvCfg
    from eyas.sim import Params, model_params

    from .evaluate import evaluate_actor

    opts = options or TrainOptions()
    out = Path(out_dir)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(opts.seed)

    privileged = isinstance(dynamics, str) and dynamics == "randomized"
    if isinstance(dynamics, str) and not privileged:
        params = model_params(dynamics)
    elif isinstance(dynamics, Params):
        params = dynamics
    else:
        params = None
    env_dynamics = "randomized" if privileged else params
    env_cfg = PointControlEnvCfg(num_envs=opts.num_envs, device=opts.device, seed=opts.seed, dynamics=env_dynamics,
                                 **opts.env_overrides)
    env = PointControlEnv(env_cfg)
    eval_env = PointControlEnv(env_cfg, num_envs=opts.eval_envs, seed=opts.seed + 10_000)

    train_cfg = copy.deepcopy(opts.train_cfg)
    train_cfg["run_name"] = name
    quiet = contextlib.redirect_stdout(io.StringIO()) if opts.quiet else contextlib.nullcontext()
    with quiet:  # rsl_rl prints the models and git notes; the progress bar (stderr) replaces that
        runner = _make_runner_class()(env, train_cfg, log_dir=str(out), device=opts.device)

    if opts.init_checkpoint is not None:
        # fine-tuning: the committed teachers carry no optimizer state, so Adam starts afresh; iterations continue
        # after the loaded one (rsl_rl would repeat its number), so model_<it>.pt names stay unique
        try:
            runner.load(str(opts.init_checkpoint), load_cfg={"actor": True, "critic": True, "iteration": True},
                        map_location=opts.device)
        except (RuntimeError, KeyError, OSError, pickle.UnpicklingError) as e:
            if created:
                shutil.rmtree(out, ignore_errors=True)
            raise TeacherError(f"--init-checkpoint {opts.init_checkpoint}: not an rsl_rl checkpoint of this actor/critic "
                               f"architecture ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from e
        runner.current_learning_iteration += 1
    elif opts.hover_init:  # a policy that starts near hover survives long enough to learn from (PPO explores locally)
        hover = float(hover_action(env.params).mean())
        output_layer = runner.alg.get_policy().mlp[-1]
        with torch.no_grad():
            output_layer.weight.mul_(0.01)
            output_layer.bias.fill_(hover)

    sidecar: dict[str, Any] = {
        "format": SIDECAR_FORMAT,
        "version": SIDECAR_VERSION,
        "name": name,
        "mode": "privileged" if privileged else "per-dynamics",
        "obs_group": "teacher",
        "num_obs": int(env.num_teacher_obs),
        "num_actions": int(env.num_actions),
        "checkpoint": None,
        "actor": train_cfg["actor"],
        "train_cfg": train_cfg,
        "env_cfg": env_cfg.to_dict() | {"dynamics": "randomized" if privileged else "fixed (see 'dynamics')"},
        "dynamics": None if privileged else params.to_dict(),
        "options": {k: v for k, v in vars(opts).items() if k not in ("train_cfg", "env_overrides")},
        "training": {"status": "running"},
    }
    atomic_write_text(out / "teacher.json", json.dumps(sidecar, indent=1))

    if opts.select not in ("best", "last"):
        raise ValueError(f"select must be 'best' or 'last', got {opts.select!r}")
    curve: list[dict] = []
    best: dict[str, Any] = {"return": -math.inf, "iteration": None}
    t_start = time.time()
    eval_time = 0.0
    bar = _progress(opts.max_iterations, name) if opts.quiet else None
    logger = runner.logger
    original_log = logger.log

    def evaluate_now(it: int) -> dict:
        nonlocal eval_time
        t0 = time.time()
        policy = runner.alg.get_policy()
        runner.alg.eval_mode()
        try:
            summary = evaluate_actor(lambda obs: policy(obs), eval_env, opts.eval_envs, seed=opts.seed + it)
        finally:
            runner.alg.train_mode()
        eval_time += time.time() - t0
        row = {"iteration": it, "env_steps": logger.tot_timesteps, "train_time_s": round(logger.tot_time, 2),
               "wall_time_s": round(time.time() - t_start, 2)} | summary
        curve.append(row)
        if opts.select == "best" and row["mean_return"] > best["return"]:
            best.update({"return": row["mean_return"], "iteration": it})
            runner.save(str(out / f"model_{it}.pt"))
        if logger.writer is not None:
            for key in ("mean_return", "share_terminated", "mean_final_position_error", "mean_position_error_last_100"):
                if not math.isnan(row[key]):
                    logger.writer.add_scalar(f"Eval/{key}", row[key], it)
        _write_curve(out / "curve.csv", curve)
        return row

    def log_hook(**kwargs) -> None:
        it = kwargs["it"]
        original_log(**kwargs)
        done = it + 1
        row = None
        if opts.eval_interval and done % opts.eval_interval == 0:
            row = evaluate_now(it)
        if bar is not None:
            post = {}
            if logger.rewbuffer:
                post["return"] = f"{sum(logger.rewbuffer) / len(logger.rewbuffer):.0f}"
                post["len"] = f"{sum(logger.lenbuffer) / len(logger.lenbuffer):.0f}"
            if curve:
                post["eval_term"] = f"{curve[-1]['share_terminated']:.3f}"
                post["eval_err"] = f"{curve[-1]['mean_final_position_error']:.3f}"
            bar.set_postfix(post, refresh=False)
            bar.update(1)
        elif row is not None:
            print(f"[{name}] eval @ it {it}: " + ", ".join(f"{k}={v:.4g}" for k, v in row.items()), flush=True)
        if row is not None and opts.stop_when_solved and row["share_terminated"] <= opts.solved_terminated \
                and row["mean_final_position_error"] <= opts.solved_position_error:
            raise _Stop("solved")
        if opts.max_minutes is not None and logger.tot_time >= 60 * opts.max_minutes:
            raise _Stop("time budget")

    if opts.init_checkpoint is not None:  # the starting point competes in the "best" selection
        evaluate_now(runner.current_learning_iteration - 1)
    logger.log = log_hook
    stopped_by = "iterations"
    try:
        with contextlib.redirect_stdout(io.StringIO()) if opts.quiet else contextlib.nullcontext():
            runner.learn(opts.max_iterations, init_at_random_ep_len=True)
    except _Stop as stop:
        stopped_by = stop.reason
        if logger.writer is not None:  # learn() was interrupted before its final save
            runner.save(str(out / f"model_{runner.current_learning_iteration}.pt"))
            logger.stop_logging_writer()
    finally:
        if bar is not None:
            bar.close()
    train_time, wall_time = logger.tot_time, time.time() - t_start
    if not curve or curve[-1]["iteration"] != runner.current_learning_iteration:
        evaluate_now(runner.current_learning_iteration)

    if logger.writer is not None and hasattr(logger.writer, "close"):
        logger.writer.close()

    last_it = runner.current_learning_iteration
    chosen = best["iteration"] if opts.select == "best" and best["iteration"] is not None else last_it
    sidecar["checkpoint"] = f"model_{chosen}.pt"
    sidecar["training"] = {
        "status": "done",
        "stopped_by": stopped_by,
        "iterations": last_it + 1,
        "env_steps": logger.tot_timesteps,
        "train_time_s": round(train_time, 1),
        "eval_time_s": round(eval_time, 1),
        "wall_time_s": round(wall_time, 1),
        "torch_threads": torch.get_num_threads(),
        "selection": opts.select,
        "selected_iteration": chosen,
        "curve": "curve.csv",
    }
    atomic_write_text(out / "teacher.json", json.dumps(sidecar, indent=1))

    # final evaluation of the selected checkpoint through the same loader the distillation uses, on episodes
    # (seed) not used for selection
    from .loading import load_teacher

    teacher = load_teacher(out, device=opts.device)
    final_env = PointControlEnv(env_cfg, num_envs=min(opts.final_eval_episodes, 1024), seed=opts.seed + 20_000)
    final = evaluate_actor(teacher, final_env, opts.final_eval_episodes, seed=opts.seed + 20_000)
    sidecar["evaluation"] = final | {"seed": opts.seed + 20_000}
    atomic_write_text(out / "teacher.json", json.dumps(sidecar, indent=1))
    return sidecar


def _write_curve(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())
