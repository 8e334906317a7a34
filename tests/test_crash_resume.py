"""Crash tests: `eyas distill` killed with SIGKILL during an epoch and during APG, then resumed with --resume,
loses only the interrupted work and ends with the same parameters as an uninterrupted run (CPU)."""
import json
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


TEACHER_TINY = ["--iterations", "6", "--max_minutes", "0", "--num_envs", "32", "--steps_per_env", "8",
                "--eval_interval", "2", "--eval_envs", "8", "--final_eval_episodes", "8", "--actor_hidden", "16",
                "--critic_hidden", "16", "--num_threads", "1", "--seed", "3"]


def _teacher_train(out: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "eyas.teachers.cli", "train", "--mode", "privileged", "--out",
                             str(out), *TEACHER_TINY, *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _resume_iteration(run: Path) -> int:
    try:
        return int(torch.load(run / "resume.pt", weights_only=True)["iteration"])
    except Exception:  # not there yet, or being replaced
        return -1


def test_killed_teacher_training_resumes_to_the_same_parameters(tmp_path):
    """`eyas teacher train` killed mid-run continues after its last complete PPO iteration: rsl_rl's final
    checkpoint, the evaluation curve and the selected teacher equal an uninterrupted run's."""
    whole = _teacher_train(tmp_path / "whole")
    assert whole.wait(timeout=600) == 0, whole.stderr.read()[-2000:]
    run = tmp_path / "killed" / "privileged"
    killed = _teacher_train(tmp_path / "killed")
    _kill_when(killed, lambda: _resume_iteration(run) >= 2)
    assert not (run / "model_5.pt").exists()  # the kill landed before the end
    resumed = _teacher_train(tmp_path / "killed", "--resume")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()[-2000:]
    a = torch.load(tmp_path / "whole" / "privileged" / "model_5.pt", weights_only=True)
    b = torch.load(run / "model_5.pt", weights_only=True)
    for part in ("actor_state_dict", "critic_state_dict"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    assert a["optimizer_state_dict"]["param_groups"][0]["lr"] == b["optimizer_state_dict"]["param_groups"][0]["lr"]
    curve = [(tmp_path / d / "privileged" / "curve.csv").read_text().splitlines() for d in ("whole", "killed")]
    strip = lambda rows: [r.split(",")[:2] + r.split(",")[4:] for r in rows]  # drop the measured times
    assert strip(curve[0]) == strip(curve[1])
    sides = [json.loads((tmp_path / d / "privileged" / "teacher.json").read_text()) for d in ("whole", "killed")]
    assert sides[0]["checkpoint"] == sides[1]["checkpoint"]
    assert sides[0]["evaluation"]["return_mean"] == sides[1]["evaluation"]["return_mean"]


def test_teacher_resume_refuses_other_settings(tmp_path):
    out = tmp_path / "t"
    first = _teacher_train(out, "--iterations", "1")
    assert first.wait(timeout=600) == 0, first.stderr.read()[-2000:]
    (out / "privileged" / "teacher.json").write_text(
        (out / "privileged" / "teacher.json").read_text().replace('"status": "done"', '"status": "running"'))
    other = _teacher_train(out, "--resume", "--num_envs", "16")
    assert other.wait(timeout=600) == 2
    err = other.stderr.read().strip().splitlines()
    assert len(err) == 1 and "started with other settings" in err[0] and "num_envs: 32 -> 16" in err[0], err


def test_teacher_resume_falls_back_to_the_previous_state(tmp_path):
    out, run = tmp_path / "t", tmp_path / "t" / "privileged"
    first = _teacher_train(out, "--iterations", "2")
    assert first.wait(timeout=600) == 0, first.stderr.read()[-2000:]
    (run / "teacher.json").write_text((run / "teacher.json").read_text().replace('"status": "done"', '"status": "x"'))
    (run / "resume.pt").write_bytes((run / "resume.pt").read_bytes()[:1000])  # truncated
    again = _teacher_train(out, "--iterations", "2", "--resume")
    assert again.wait(timeout=600) == 0, again.stderr.read()[-2000:]
    notices = [line for line in again.stderr.read().splitlines() if "resuming from resume.prev.pt (iteration 0)" in line]
    assert len(notices) == 1
    assert json.loads((run / "teacher.json").read_text())["training"]["status"] == "done"
