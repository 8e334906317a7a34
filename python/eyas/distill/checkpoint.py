"""What a distillation run writes and reads back: actors (rl-tools .h5 + eyas .pt), the starting student, the run
state that ``--resume`` continues from (state.pt, history.json), and the foundation_policy check of an export."""
from __future__ import annotations

import copy
import fcntl
import os
from pathlib import Path

import torch

from eyas.distill.dataset import DistillationError
from eyas.io import (atomic_torch_save, atomic_torch_save_keeping_previous, atomic_write_json, first_line,
                     read_torch_file, read_with_fallback)
from eyas.model import StudentPolicy
from eyas.rltools_h5 import RAPTOR_OBSERVATION

STATE, PREVIOUS_STATE, HISTORY, LOCK = "state.pt", "state.prev.pt", "history.json", ".lock"


def save_actor(student: StudentPolicy, directory: Path, stem: str, meta: dict, environment: dict) -> None:
    """``directory/stem.h5`` (rl-tools layout, float32, with its example) and ``directory/stem.pt``."""
    from eyas.rltools_h5 import save_rltools_h5

    cpu = copy.deepcopy(student).to("cpu", torch.float32)
    cpu.reset()
    save_rltools_h5(cpu, directory / f"{stem}.h5", meta={"exported_by": "eyas distill", **meta,
                                                           "environment": environment})
    atomic_torch_save(directory / f"{stem}.pt", {"state_dict": cpu.state_dict(), "num_obs": cpu.num_obs,
                                                 "num_actions": cpu.num_actions, "hidden_dim": cpu.hidden_dim,
                                                 "meta": meta})


def read_student_pt(path: Path, error: type[Exception]) -> tuple[StudentPolicy, dict | None]:
    """A student ``save_actor`` wrote (best_actor.pt, checkpoints/<epoch>/actor.pt) and its meta, read without
    running code; anything else, or NaN / inf parameters, is ``error`` naming the file."""
    saved = read_torch_file(path, error, "eyas distill student (.pt)")
    try:
        policy = StudentPolicy(int(saved["num_obs"]), int(saved["num_actions"]), int(saved["hidden_dim"]))
        policy.load_state_dict(saved["state_dict"])
    except (KeyError, IndexError, AttributeError, TypeError, RuntimeError, ValueError) as e:
        raise error(f"{path}: not an eyas distill student (an rl-tools .h5 actor or an eyas distill .pt): "
                    f"{first_line(e)}") from e
    if not all(bool(torch.isfinite(t).all()) for t in policy.state_dict().values()):
        raise error(f"{path}: the student's parameters contain NaN or inf")
    return policy, saved.get("meta")


def actor_environment(caps, task: str) -> dict:
    """The ``environment`` entry of an exported actor's meta: l2f's observation layout, or the task's."""
    if caps.l2f_observation:
        return {"name": "l2f", "observation": RAPTOR_OBSERVATION}
    return {"name": task, "backend": caps.name, "observation": "policy"}


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
        else:
            policy, _ = read_student_pt(path, DistillationError)
    except (RLToolsH5Error, DistillationError, OSError) as e:
        raise DistillationError(f"--init_student {source}: cannot read a student from {path.name} "
                                f"({first_line(e)})") from e
    shape = (policy.num_obs, policy.num_actions, policy.hidden_dim)
    if shape != (num_obs, num_actions, hidden_dim):
        raise DistillationError(f"--init_student {source}: the student maps {shape[0]} observations to {shape[1]} "
                                f"actions with {shape[2]} GRU units; this run needs {num_obs} -> {num_actions} with "
                                f"{hidden_dim}")
    return policy.state_dict()


def has_run_state(log_dir: Path) -> bool:
    """True when ``log_dir`` holds a complete state of a run (state.pt or state.prev.pt)."""
    return (log_dir / STATE).is_file() or (log_dir / PREVIOUS_STATE).is_file()


def save_run_state(log_dir: Path, state: dict) -> None:
    """state.pt (everything ``--resume`` needs: tensors and plain values only) and its readable part, history.json.
    The state it replaces stays as state.prev.pt: the last two complete states are always on disk (between the
    two renames only state.prev.pt, which `load_run_state` then reads)."""
    atomic_torch_save_keeping_previous(log_dir / STATE, log_dir / PREVIOUS_STATE, state)
    apg = state.get("apg")
    atomic_write_json(log_dir / HISTORY, {"config": state["config"], "teacher_eval": state["teacher_eval"],
                                          "offsets": state["offsets"].tolist(), "history": state["history"],
                                          "apg": apg["history"] if apg is not None else []})


def load_run_state(log_dir: Path) -> dict:
    """The latest complete state of ``log_dir``, read without unpickling code (``weights_only=True``): state.pt,
    or, when it is unreadable (truncated, corrupt), state.prev.pt with a one-line notice on stderr."""
    return read_with_fallback(log_dir / STATE, log_dir / PREVIOUS_STATE, _read_state, DistillationError,
                              lambda latest, state: f"eyas distill: {latest}; resuming from {PREVIOUS_STATE} "
                                                    f"(epoch {state['epoch']})")


def _read_state(path: Path) -> dict:
    if not path.is_file():  # killed between the renames of `save_run_state`
        raise DistillationError(f"--resume: {path} is missing")
    state = read_torch_file(path, DistillationError, "--resume state")
    if not isinstance(state, dict) or "epoch" not in state:
        raise DistillationError(f"--resume: {path} is not an eyas distill run state")
    return state


class RunLock:
    """An exclusive lock on a run directory (``.lock``, flock): a second writer is refused with one line. The
    kernel drops it when the process ends, however it ends."""

    def __init__(self, log_dir: Path):
        log_dir.mkdir(parents=True, exist_ok=True)
        self.file = open(log_dir / LOCK, "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            holder = self.file.read().strip() or "another process"
            self.file.close()
            raise DistillationError(f"{log_dir} is being written by {holder}; wait for it or choose another "
                                    f"--log_dir") from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"eyas distill (pid {os.getpid()})")
        self.file.flush()

    def release(self) -> None:
        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()


def check_resumable(state: dict, cfg, log_dir: Path, sources: list[str]) -> None:
    """Refuse to continue ``state`` with ``cfg`` when a setting that ``--resume`` may not change differs (more are
    fixed once the APG phase has started), when nothing is left to do, or when the teachers differ."""
    from eyas.distill.config import resume_fixed

    saved, mine, apg = state["config"], cfg.to_dict(), state.get("apg")
    fixed, in_apg = resume_fixed(False), set(resume_fixed(apg is not None)) - set(resume_fixed(False))
    same = {"init_student": lambda a, b: (a is None) == (b is None) and (a is None or _resolved(a) == _resolved(b))}
    changed = [f"{k}: {saved.get(k)!r} -> {mine[k]!r}" + (" (the run is in its APG phase)" if k in in_apg else "")
               for k in [*fixed, *sorted(in_apg)]
               if not same.get(k, lambda a, b: a == b)(saved.get(k), mine[k])]
    if changed:
        raise DistillationError(f"--resume: settings differ from the run in {log_dir}: " + "; ".join(changed))
    apg_done = apg["trainer"]["iteration"] if apg is not None else 0
    if int(state["epoch"]) + 1 >= cfg.training.n_epochs and apg_done >= cfg.apg.iterations:
        raise DistillationError(f"--resume: the run in {log_dir} already finished epoch {state['epoch']}"
                                + (f" and {apg_done} APG iterations" if apg_done else "")
                                + f"; raise --n_epochs (now {cfg.training.n_epochs}) or --apg_iterations "
                                  f"(now {cfg.apg.iterations}) to continue it")
    saved_sources = state.get("teachers", [])
    if [_resolved(s) for s in saved_sources] != [_resolved(s) for s in sources]:
        raise DistillationError(f"--resume: the run in {log_dir} used {len(saved_sources)} other teachers "
                                f"({saved_sources[:2]}...); pass the same --teacher_checkpoint")


def _resolved(source: str) -> str:
    """A teacher source compared as an absolute path (runs before paths were stored absolute hold relative ones)."""
    return source if source == "foundation_policy" or not source else str(Path(source).resolve())


def check_foundation_policy(path: Path) -> dict:
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
