"""Exact resume of `eyas teacher train`: what rsl_rl's `model_<it>.pt` leaves out.

rsl_rl's checkpoints hold the actor, the critic and the optimizer (its learning rate included, which the adaptive
KL schedule changes); PPO's rollout storage is refilled every iteration. What else decides the next iteration is
the env (states, per-env dynamics, episode counters and its random stream) and torch's global random stream (the
action samples and the mini-batch shuffles). After every logged iteration `TeacherRunner` writes all of it, with
the logger's totals and the evaluation curve, to ``resume.pt`` (the one it replaces stays as ``resume.prev.pt``).
``train_teacher(..., resume=True)`` restores it and lets rsl_rl's ``learn`` run the remaining iterations, so on
the same device and thread count a killed run continues as if it had not stopped, with two limits:

* ``--max_minutes`` stops on rsl_rl's measured training time, which no rerun reproduces;
* with observation noise on (off by default), the first observation after the resume has its noise redrawn.
"""
from __future__ import annotations

import json
from collections import deque
from pathlib import Path
from typing import Any

import torch

from eyas.io import atomic_torch_save_keeping_previous, read_torch_file, read_with_fallback

from .base import TeacherError

RESUME, PREVIOUS = "resume.pt", "resume.prev.pt"
FORMAT = "eyas-teacher-resume"
# the sidecar entries that decide the training; --resume refuses a command that changes one
FIXED_SIDECAR_KEYS = ("name", "mode", "train_cfg", "env_cfg", "dynamics", "options")
FREE_OPTIONS = ("quiet", "max_iterations", "max_minutes")  # options --resume may change


def capture(runner: Any, env: Any, monitor: Any) -> dict:
    """Everything the next iteration depends on, as tensors and plain values (``weights_only`` readable)."""
    logger = runner.logger
    return {
        "format": FORMAT,
        "iteration": runner.current_learning_iteration,
        "alg": runner.alg.save(),
        "env": env.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "logger": {"tot_timesteps": logger.tot_timesteps, "tot_time": logger.tot_time,
                   "rewbuffer": list(logger.rewbuffer), "lenbuffer": list(logger.lenbuffer),
                   "cur_reward_sum": logger.cur_reward_sum.clone(),
                   "cur_episode_length": logger.cur_episode_length.clone()},
        "monitor": monitor.state_dict(),
    }


def save(out: Path, state: dict) -> None:
    atomic_torch_save_keeping_previous(out / RESUME, out / PREVIOUS, state)


def load(out: Path) -> dict:
    """The latest readable resume state of run directory ``out``; ``resume.prev.pt`` (with a one-line notice)
    when ``resume.pt`` is missing, truncated or corrupt."""
    return read_with_fallback(out / RESUME, out / PREVIOUS, _read, TeacherError,
                              lambda latest, state: f"eyas teacher train: {latest}; resuming from {PREVIOUS} "
                                                    f"(iteration {state['iteration']})")


def _read(path: Path) -> dict:
    if not path.is_file():
        raise TeacherError(f"--resume: {path} is missing (the run never finished an iteration, or is not an "
                           f"`eyas teacher train` run)")
    state = read_torch_file(path, TeacherError, "--resume state")
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise TeacherError(f"--resume: {path} is not an eyas teacher resume state")
    return state


def check_same_run(saved_sidecar: dict, sidecar: dict, out: Path) -> None:
    """Refuse to resume ``out`` with a command whose training settings differ from the run's own."""
    def fixed(side: dict) -> dict:
        values = json.loads(json.dumps({k: side.get(k) for k in FIXED_SIDECAR_KEYS}))  # as teacher.json holds it
        values["options"] = {k: v for k, v in (values["options"] or {}).items() if k not in FREE_OPTIONS}
        return values

    a, b = fixed(saved_sidecar), fixed(sidecar)
    changed = [f"{k}" for k in FIXED_SIDECAR_KEYS if k != "options" and a[k] != b[k]]
    changed += [f"{k}: {a['options'].get(k)!r} -> {b['options'].get(k)!r}"
                for k in sorted(set(a["options"]) | set(b["options"])) if a["options"].get(k) != b["options"].get(k)]
    if changed:
        raise TeacherError(f"--resume: {out} was started with other settings ({'; '.join(changed)}); resume it "
                           f"with the command that started it")


def restore(state: dict, runner: Any, env: Any, monitor: Any) -> None:
    """Put ``state`` (from `capture`) back; the next ``runner.learn`` starts at the iteration after it."""
    runner.alg.load(state["alg"], None, strict=True)
    runner.current_learning_iteration = int(state["iteration"]) + 1
    env.load_state_dict(state["env"])
    logger, saved = runner.logger, state["logger"]
    logger.tot_timesteps, logger.tot_time = saved["tot_timesteps"], saved["tot_time"]
    logger.rewbuffer = deque(saved["rewbuffer"], maxlen=logger.rewbuffer.maxlen)
    logger.lenbuffer = deque(saved["lenbuffer"], maxlen=logger.lenbuffer.maxlen)
    logger.cur_reward_sum.copy_(saved["cur_reward_sum"])
    logger.cur_episode_length.copy_(saved["cur_episode_length"])
    monitor.load_state_dict(state["monitor"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])


def progress(out: Path) -> str:
    """Where the teacher run in ``out`` stands, for `eyas teacher train --resume` over several teachers: "done"
    (evaluated: skip it), "resumable" (a resume state exists) or "new" (nothing complete: train it afresh)."""
    try:
        side = json.loads((out / "teacher.json").read_text())
        if side.get("training", {}).get("status") == "done" and "evaluation" in side:
            return "done"
    except (OSError, ValueError, AttributeError):
        pass
    return "resumable" if (out / RESUME).is_file() or (out / PREVIOUS).is_file() else "new"
