"""`eyas teacher train` under torchrun, through rsl_rl's own multi-process training.

rsl_rl's `OnPolicyRunner` reads WORLD_SIZE / RANK / LOCAL_RANK, all-reduces PPO's gradients (and the observation
normalisers' statistics), broadcasts the parameters when `learn` starts, and lets rank 0 alone log and save
checkpoints. eyas adds only what rsl_rl leaves out:

* gloo on the CPU (rsl_rl's `_configure_multi_gpu` hard-codes NCCL) and ``cuda:LOCAL_RANK`` for ``--device cuda``;
* one training-env seed per rank (``seed + RANK``, as Isaac Lab's rsl_rl scripts do), so the ranks collect
  different experience; the evaluations stay those of ``seed``;
* rank 0 alone evaluates, selects, writes teacher.json / curve.csv and stops early (time budget, solved); it
  tells the other ranks after every iteration whether to stop (`agreed_stop`), which only run rsl_rl's `learn`
  (`follow_main`).
"""
from __future__ import annotations

import contextlib
import io
import os
from datetime import timedelta
from typing import Any, Callable

import torch.distributed as dist

from .base import TeacherError

# gloo's timeout (torch's default, 30 min, unless EYAS_DIST_TIMEOUT_S says otherwise): rank 0's evaluations and
# final evaluation run while the other ranks wait
TIMEOUT_ENV, DEFAULT_TIMEOUT_S = "EYAS_DIST_TIMEOUT_S", 1800.0


def world_size() -> int:
    return int(os.getenv("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.getenv("RANK", "0"))


def rank_device(device: str) -> str:
    """``cuda`` under torchrun is ``cuda:LOCAL_RANK`` (the device rsl_rl requires of each rank)."""
    return f"cuda:{os.getenv('LOCAL_RANK', '0')}" if world_size() > 1 and device == "cuda" else device


def configure(runner: Any) -> bool:
    """rsl_rl's multi-process attributes on ``runner`` around a gloo process group (a CPU run), or around the
    group an earlier teacher of the same command opened; False where rsl_rl's own set-up applies (one process,
    or the first CUDA runner: NCCL)."""
    size = world_size()
    if size <= 1 or (str(runner.device).startswith("cuda") and not dist.is_initialized()):
        return False
    runner.gpu_world_size, runner.is_distributed = size, True
    runner.gpu_local_rank, runner.gpu_global_rank = int(os.getenv("LOCAL_RANK", "0")), rank()
    runner.cfg["multi_gpu"] = {"global_rank": runner.gpu_global_rank, "local_rank": runner.gpu_local_rank,
                               "world_size": size}
    if not dist.is_initialized():
        dist.init_process_group("gloo", rank=runner.gpu_global_rank, world_size=size,
                                timeout=timedelta(seconds=float(os.getenv(TIMEOUT_ENV) or DEFAULT_TIMEOUT_S)))
    return True


def agreed_stop(hook: Callable[[int], None] | None, it: int, stop_type: type[Exception]) -> None:
    """After iteration ``it``: rank 0 runs ``hook`` (evaluation, selection, early stops) and every rank raises
    ``stop_type(reason)`` when it raised one there."""
    reason = None
    if rank() == 0 and hook is not None:
        try:
            hook(it)
        except stop_type as stop:
            reason = stop.reason
    box = [reason]
    dist.broadcast_object_list(box, src=0)
    if box[0] is not None:
        raise stop_type(box[0])


def follow_main(runner: Any, max_iterations: int, stop_type: type[Exception]) -> None:
    """A rank other than 0: rsl_rl's `learn` (its printout swallowed) for as many iterations as rank 0, stopping
    when rank 0 stops; returns None (rank 0 has the teacher)."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            runner.learn(max_iterations, init_at_random_ep_len=True)
    except stop_type:
        pass


def refuse_resume(resume: bool) -> None:
    """Exact resume restores rank 0's runner only (the other ranks' optimisers and envs are not saved)."""
    if resume and world_size() > 1:
        raise TeacherError("--resume under torchrun is not supported: restart the training, or resume it in one "
                           "process")
