"""No path that takes a user's file unpickles it: a crafted pickle whose payload would print and write ``PWNED``,
handed to every flag and loader that reads a file, is refused with one line (exit 2) and its payload never runs."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from eyas.cli import main as eyas
from test_distill_inputs import write_teacher

TEACHER = "fixtures/teachers/crazyflie"
TINY_TEACHER = ["--iterations", "1", "--max_minutes", "0", "--num_envs", "8", "--steps_per_env", "4",
                "--eval_interval", "0", "--eval_envs", "4", "--final_eval_episodes", "4", "--actor_hidden", "8",
                "--critic_hidden", "8", "--num_threads", "1", "--device", "cpu"]
TINY_DISTILL = ["--device", "cpu", "--quiet", "--num_threads", "1", "--num_envs", "8", "--num_episodes", "4",
                "--offset_episodes", "2", "--min_teacher_return=-1e9", "--batch_size", "2", "--sequence_length", "8",
                "--eval_episodes", "2", "--eval_registry_episodes", "0", "--final_eval_episodes", "2",
                "--plots", "false"]


class Payload:
    """Unpickling this runs code: it prints PWNED and writes it to ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"print('PWNED'); open({self.marker!r}, 'w').write('PWNED')",)


@pytest.fixture
def crafted(tmp_path):
    """``write(path, wrap=dict)``: a torch.save file of ``wrap(Payload)`` at ``path``; and the marker to check."""
    marker = tmp_path / "PWNED"

    def write(path, wrap=lambda payload: {"actor_state_dict": payload, "iter": 1}):
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(wrap(Payload(marker)), path)
        return path
    write.marker = marker
    return write


PLAIN = "not a plain checkpoint of tensors and numbers"  # what a torch.load(weights_only=True) refusal says


def refused(capsys, crafted, argv, command, needle: str = "") -> str:
    """Run ``eyas ARGV``: exit 2 with one error line (holding ``needle``), the payload never ran."""
    rc = eyas(argv)
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith(f"eyas {command}: error: "), (rc, err)
    assert needle in lines[0] and "weights_only" not in lines[0], lines[0]
    assert "PWNED" not in out + err and not crafted.marker.exists(), "the crafted file's code ran"
    return lines[0]


def test_the_payload_would_run_if_unpickled(tmp_path, crafted, capsys):
    """The control: the same file, unpickled, does run its payload (so the tests below could fail)."""
    torch.load(crafted(tmp_path / "model_1.pt"), weights_only=False)
    assert crafted.marker.read_text() == "PWNED" and "PWNED" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["checkpoint.h5", "checkpoint.pt"])
def test_parity_fly_and_export_checkpoints(tmp_path, crafted, capsys, name):
    path = crafted(tmp_path / name, wrap=lambda p: {"state_dict": p, "num_obs": 22, "num_actions": 4, "hidden_dim": 16})
    refused(capsys, crafted, ["parity", str(path)], "parity")
    refused(capsys, crafted, ["fly", str(path), "--episodes", "1", "--device", "cpu"], "fly")
    refused(capsys, crafted, ["export", str(path), "--out", str(tmp_path / "out")], "export",
            PLAIN if name.endswith(".pt") else "")
    assert not (tmp_path / "out").exists()


def test_parity_sequences(tmp_path, crafted, capsys):
    from eyas import raptor_checkpoint_path

    raw = crafted(tmp_path / "raw.npz", wrap=lambda p: {"input": p})
    inside = tmp_path / "inside.npz"
    np.savez(inside, input=np.array([Payload(crafted.marker)], dtype=object))
    for path in (raw, inside):
        line = refused(capsys, crafted, ["parity", str(raptor_checkpoint_path()), "--sequences", str(path)], "parity")
        assert "--sequences" in line


def test_distill_teacher_and_init_student(tmp_path, crafted, capsys):
    teacher = crafted(tmp_path / "teacher" / "model_1.pt")
    refused(capsys, crafted, ["distill", "--teacher_checkpoint", str(teacher), "--log_dir", str(tmp_path / "a"),
                              *TINY_DISTILL], "distill", PLAIN)
    student = crafted(tmp_path / "actor.pt", wrap=lambda p: {"state_dict": p, "num_obs": 22, "num_actions": 4,
                                                              "hidden_dim": 16})
    refused(capsys, crafted, ["distill", "--teacher_checkpoint", TEACHER, "--init_student", str(student),
                              "--log_dir", str(tmp_path / "b"), *TINY_DISTILL], "distill", PLAIN)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_distill_resume_state(tmp_path, crafted, capsys):
    teacher, run = write_teacher(tmp_path / "teacher.h5"), tmp_path / "run"
    args = ["--teacher_checkpoint", str(teacher), "--log_dir", str(run), *TINY_DISTILL]
    assert eyas(["distill", "--n_epochs", "1", *args]) == 0
    capsys.readouterr()
    for name in ("state.pt", "state.prev.pt"):
        crafted(run / name, wrap=lambda p: {"epoch": 1, "config": p})
    assert "--resume" in refused(capsys, crafted, ["distill", "--resume", "--n_epochs", "2", *args], "distill", PLAIN)


def test_teacher_train_init_checkpoint_and_resume(tmp_path, crafted, capsys):
    init = crafted(tmp_path / "init" / "model_3.pt",
                   wrap=lambda p: {"actor_state_dict": p, "critic_state_dict": {}, "iter": 3})
    refused(capsys, crafted, ["teacher", "train", "--dynamics", "crazyflie", "--out", str(tmp_path / "a"),
                              "--init_checkpoint", str(init), *TINY_TEACHER], "teacher train", PLAIN)
    assert not (tmp_path / "a").exists()
    out, run = tmp_path / "b", tmp_path / "b" / "crazyflie"
    train = ["teacher", "train", "--dynamics", "crazyflie", "--out", str(out), *TINY_TEACHER]
    assert eyas(train) == 0
    capsys.readouterr()
    side = json.loads((run / "teacher.json").read_text())
    (run / "teacher.json").write_text(json.dumps(side | {"training": {"status": "running"}}))
    for name in ("resume.pt", "resume.prev.pt"):
        crafted(run / name, wrap=lambda p: {"format": "eyas-teacher-resume", "iteration": 0, "alg": p})
    assert "--resume" in refused(capsys, crafted, [*train, "--resume"], "teacher train", PLAIN)


def test_teacher_eval_and_export(tmp_path, crafted, capsys):
    run = tmp_path / "run"
    shutil.copytree(TEACHER, run)
    side = json.loads((run / "teacher.json").read_text())
    crafted(run / side["checkpoint"])
    for path in (run, run / side["checkpoint"]):
        refused(capsys, crafted, ["teacher", "eval", str(path), "--episodes", "1", "--device", "cpu"], "teacher eval",
                PLAIN)
    refused(capsys, crafted, ["teacher", "export", str(run), str(tmp_path / "dest")], "teacher export", PLAIN)
    assert not (tmp_path / "dest").exists()


@pytest.mark.parametrize("flag", ["train", "eval"])
def test_teacher_dynamics_file(tmp_path, crafted, capsys, flag):
    """--dynamics reads l2f JSON: a pickle there is not JSON."""
    dynamics = crafted(tmp_path / "dynamics.json", wrap=lambda p: {"dynamics": p})
    argv = (["teacher", "train", "--dynamics", str(dynamics), "--out", str(tmp_path / "a"), *TINY_TEACHER]
            if flag == "train" else ["teacher", "eval", TEACHER, "--dynamics", str(dynamics), "--device", "cpu"])
    assert "dynamics" in refused(capsys, crafted, argv, f"teacher {flag}")
