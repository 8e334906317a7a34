"""Crash tests: `eyas distill` killed with SIGKILL during an epoch and during APG, then resumed with --resume,
loses only the interrupted work and ends with the same parameters as an uninterrupted run (CPU)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from test_distill_inputs import write_teacher

SMALL = ["--device", "cpu", "--quiet", "--num_threads", "1", "--num_envs", "16", "--num_episodes", "8",
         "--offset_episodes", "4", "--min_teacher_return=-1e9", "--batch_size", "4", "--sequence_length", "16",
         "--epoch_teacher_forcing", "1", "--eval_episodes", "4", "--eval_registry_episodes", "0",
         "--final_eval_episodes", "4", "--plots", "false", "--seed", "5"]


def _distill(log_dir: Path, teacher: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "eyas.distill", "--teacher_checkpoint", str(teacher),
                             "--log_dir", str(log_dir), *SMALL, *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` holds (it must still be running then: the kill lands mid-run)."""
    start = time.monotonic()
    while not ready():
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() - start < timeout
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def _final_weights(log_dir: Path) -> dict:
    return torch.load(log_dir / "final_actor.pt", weights_only=True)["state_dict"]


@pytest.mark.parametrize("phase, args, ready", [
    ("epoch", ["--n_epochs", "6"], lambda run: (run / "checkpoints" / "2" / "actor.pt").is_file()),
    ("apg", ["--n_epochs", "2", "--apg_iterations", "6", "--apg_eval_every", "1", "--apg_envs", "8",
             "--apg_horizon", "20"], lambda run: (run / "checkpoints" / "apg_2" / "actor.pt").is_file()),
])
def test_killed_run_resumes_to_the_same_parameters(tmp_path, phase, args, ready):
    teacher = write_teacher(tmp_path / "teacher.h5")
    whole = _distill(tmp_path / "whole", teacher, *args)
    assert whole.wait(timeout=600) == 0, whole.stderr.read()[-2000:]
    killed = _distill(tmp_path / "killed", teacher, *args)
    _kill_when(killed, lambda: ready(tmp_path / "killed"))
    resumed = _distill(tmp_path / "killed", teacher, "--resume", *args)
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()[-2000:]
    a, b = _final_weights(tmp_path / "whole"), _final_weights(tmp_path / "killed")
    for k in a:
        assert torch.equal(a[k], b[k]), (phase, k)
