"""Crash tests: `eyas distill` killed with SIGKILL during an epoch and during APG, and `eyas teacher train` during
an iteration, then resumed with --resume, lose only the interrupted work and end with the same parameters as an
uninterrupted run (CPU). Each run stops itself at an exact point (tests/stop_point.py) and says so on a pipe; the
test kills it there, so the kill cannot miss a run that has already ended."""
import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from test_distill_inputs import write_teacher

SMALL = ["--device", "cpu", "--quiet", "--num_threads", "1", "--num_envs", "16", "--num_episodes", "8",
         "--offset_episodes", "4", "--min_teacher_return=-1e9", "--batch_size", "4", "--sequence_length", "16",
         "--epoch_teacher_forcing", "1", "--eval_episodes", "4", "--eval_registry_episodes", "0",
         "--final_eval_episodes", "4", "--plots", "false", "--seed", "5"]


STOP_POINT = Path(__file__).with_name("stop_point.py")
SAVE_STATE, BACKWARD = "eyas.distill.checkpoint:save_run_state", "torch:Tensor.backward"


def _command(module: str, args: list[str], stop: list[tuple[str, int]] | None, fd: int | None) -> list[str]:
    if stop is None:
        return [sys.executable, "-m", module, *args]
    return [sys.executable, str(STOP_POINT), str(fd), *[f"{t}={n}" for t, n in stop], "--", module, *args]


def _run(module: str, args: list[str], stop: list[tuple[str, int]] | None = None) -> subprocess.Popen:
    """``python -m module args``; with ``stop`` (tests/stop_point.py's stages) it is returned once the run has
    halted at that point (it said so on a pipe)."""
    read, write = os.pipe() if stop else (None, None)
    proc = subprocess.Popen(_command(module, args, stop, write), pass_fds=(write,) if stop else (),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if stop:
        os.close(write)
        ready, _, _ = select.select([read], [], [], 600)
        said = os.read(read, 1) if ready else b""
        os.close(read)
        assert said == b"!", f"the run ended before its stop point: {proc.stderr.read()[-2000:]}"
    return proc


def _kill(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    os.kill(proc.pid, sig)
    proc.wait(timeout=120)


def _distill(log_dir: Path, teacher: Path, *args: str, stop=None) -> subprocess.Popen:
    return _run("eyas.distill", ["--teacher_checkpoint", str(teacher), "--log_dir", str(log_dir), *SMALL, *args], stop)


def _final_weights(log_dir: Path) -> dict:
    return torch.load(log_dir / "final_actor.pt", weights_only=True)["state_dict"]


# the kill lands in a gradient step: of epoch 4 (after 3 saved epochs), of APG step 3 (after the distillation's 2
# epochs and 2 APG steps were saved)
@pytest.mark.parametrize("phase, args, saves", [
    ("epoch", ["--n_epochs", "6"], 3),
    ("apg", ["--n_epochs", "2", "--apg_iterations", "6", "--apg_eval_every", "1", "--apg_envs", "8",
             "--apg_horizon", "20", "--apg_eval_episodes", "4", "--apg_select_cases", "hover/randomized"], 4),
])
def test_killed_run_resumes_to_the_same_parameters(tmp_path, phase, args, saves):
    teacher = write_teacher(tmp_path / "teacher.h5")
    whole = _distill(tmp_path / "whole", teacher, *args)
    assert whole.wait(timeout=600) == 0, whole.stderr.read()[-2000:]
    killed = _distill(tmp_path / "killed", teacher, *args, stop=[(SAVE_STATE, saves), (BACKWARD, 1)])
    _kill(killed)
    assert killed.returncode == -signal.SIGKILL
    resumed = _distill(tmp_path / "killed", teacher, "--resume", *args)
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()[-2000:]
    a, b = _final_weights(tmp_path / "whole"), _final_weights(tmp_path / "killed")
    for k in a:
        assert torch.equal(a[k], b[k]), (phase, k)


TEACHER_TINY = ["--iterations", "6", "--max_minutes", "0", "--num_envs", "32", "--steps_per_env", "8",
                "--eval_interval", "2", "--eval_envs", "8", "--final_eval_episodes", "8", "--actor_hidden", "16",
                "--critic_hidden", "16", "--num_threads", "1", "--seed", "3"]


def _teacher_train(out: Path, *args: str, stop=None) -> subprocess.Popen:
    return _run("eyas.teachers.cli", ["train", "--mode", "privileged", "--out", str(out), *TEACHER_TINY, *args], stop)


# in a PPO update of iteration 3, after iterations 0-2 were saved for --resume
MID_ITERATION = [("eyas.teachers.resume:save", 3), (BACKWARD, 1)]


def test_killed_teacher_training_resumes_to_the_same_parameters(tmp_path):
    """`eyas teacher train` killed mid-run continues after its last complete PPO iteration: rsl_rl's final
    checkpoint, the evaluation curve and the selected teacher equal an uninterrupted run's."""
    whole = _teacher_train(tmp_path / "whole")
    assert whole.wait(timeout=600) == 0, whole.stderr.read()[-2000:]
    run = tmp_path / "killed" / "privileged"
    killed = _teacher_train(tmp_path / "killed", stop=MID_ITERATION)
    _kill(killed)
    assert killed.returncode == -signal.SIGKILL and not (run / "model_5.pt").exists()
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


def test_interrupted_teacher_training_says_so_in_one_line(tmp_path):
    """SIGINT (Ctrl-C) in a PPO update: one line naming what --resume continues, exit 130, and the run resumable."""
    run = tmp_path / "t" / "privileged"
    interrupted = _teacher_train(tmp_path / "t", stop=MID_ITERATION)
    _kill(interrupted, signal.SIGINT)
    err = [line for line in interrupted.stderr.read().splitlines() if line.strip()]
    assert interrupted.returncode == 130, err
    assert err[-1] == (f"eyas teacher train: interrupted; the same command with --resume continues {run} after its last "
                       f"complete iteration") and not any("Traceback" in line for line in err), err
    assert sorted(p.name for p in run.glob("resume*.pt")) == ["resume.prev.pt", "resume.pt"]
    assert not list(run.glob(".*.tmp"))  # nothing half-written


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
