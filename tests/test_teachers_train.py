"""`eyas teacher train|eval|export` end to end on a tiny budget (plumbing, not learning)."""
from __future__ import annotations

import csv
import json

import pytest
import torch

from eyas.cli import main as eyas
from eyas.envs import PointControlEnv
from eyas.sim import model_params
from eyas.teachers import check_teacher_env, load_teacher, load_teacher_set


def main(argv: list[str]) -> int:
    """`eyas teacher ARGV`'s exit status."""
    return eyas(["teacher", *argv])

TINY = ["--iterations", "2", "--num_envs", "32", "--steps_per_env", "8", "--eval_interval", "1", "--eval_envs", "8",
        "--final_eval_episodes", "8", "--actor_hidden", "16", "--critic_hidden", "16", "--num_threads", "1"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("teachers")
    assert main(["train", "--dynamics", "crazyflie", "--sample", "1", "--out", str(out)] + TINY) == 0
    assert main(["train", "--mode", "privileged", "--out", str(out)] + TINY) == 0
    return out


def test_train_writes_rsl_rl_checkpoint_and_sidecar(runs):
    assert sorted(p.name for p in runs.iterdir()) == ["crazyflie", "privileged", "sampled_s0_000"]
    run = runs / "crazyflie"
    side = json.loads((run / "teacher.json").read_text())
    # default selection: the checkpoint with the best deterministic evaluation return (evaluated every iteration)
    rows = list(csv.DictReader((run / "curve.csv").open()))
    best = int(max(rows, key=lambda r: float(r["return_mean"]))["iteration"])
    assert side["training"]["selected_iteration"] == best and side["checkpoint"] == f"model_{best}.pt"
    assert (run / side["checkpoint"]).is_file() and (run / "model_1.pt").is_file()  # rsl_rl's final save too
    assert side["mode"] == "per-dynamics" and side["training"]["iterations"] == 2
    assert {"return_mean", "share_terminated", "final_position_error_mean"} <= set(side["evaluation"])
    assert list(run.glob("events.out.tfevents.*")) and len(rows) == 2
    ckpt = torch.load(run / side["checkpoint"], weights_only=True)
    assert {"actor_state_dict", "critic_state_dict", "optimizer_state_dict", "iter"} <= set(ckpt)


def test_trained_teachers_load_with_their_dynamics(runs):
    teachers = load_teacher_set(runs)
    assert [t.name for t in teachers] == ["crazyflie", "privileged", "sampled_s0_000"]
    crazyflie, privileged, sampled = teachers
    assert privileged.params is None and privileged.meta["mode"] == "privileged"
    expected = model_params("crazyflie")
    torch.testing.assert_close(crazyflie.params.dynamics.mass, expected.dynamics.mass)
    assert sampled.params is not None and not torch.allclose(sampled.params.dynamics.mass, expected.dynamics.mass)
    env = PointControlEnv(num_envs=4, dynamics=crazyflie.params)
    check_teacher_env(crazyflie, env)
    actions = crazyflie.act_on(env.get_observations())
    assert actions.shape == (4, 4) and actions.abs().max() <= 1


def test_eval_and_export(runs, tmp_path, capsys):
    result = tmp_path / "eval.json"
    assert main(["eval", str(runs / "crazyflie"), str(runs / "privileged"), "--episodes", "8", "--num_envs", "8",
                 "--json", str(result)]) == 0
    rows = json.loads(result.read_text())
    assert [r["teacher"] for r in rows] == ["crazyflie", "privileged"]
    assert [r["dynamics"] for r in rows] == ["fixed", "randomized"]
    assert main(["export", str(runs / "crazyflie"), str(tmp_path / "exported")]) == 0
    name = json.loads((runs / "crazyflie" / "teacher.json").read_text())["checkpoint"]
    exported = torch.load(tmp_path / "exported" / name, weights_only=True)
    assert "optimizer_state_dict" not in exported and "actor_state_dict" in exported
    a, b = load_teacher(runs / "crazyflie"), load_teacher(tmp_path / "exported")
    obs = torch.randn(16, a.num_obs)
    torch.testing.assert_close(a.act(obs), b.act(obs))


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path)]) == 2
    assert "needs --dynamics" in capsys.readouterr().err
    assert main(["train", "--dynamics", "no_such_model", "--out", str(tmp_path)]) == 2
    assert "neither a registry model" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "missing.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_init_checkpoint_continues_an_exported_teacher(runs, tmp_path):
    # an exported teacher has no optimizer state: training continues from its actor and critic with a fresh Adam
    source = tmp_path / "exported"
    assert main(["export", str(runs / "crazyflie"), str(source)]) == 0
    name = json.loads((source / "teacher.json").read_text())["checkpoint"]
    start = torch.load(source / name, weights_only=True)
    out = tmp_path / "continued"
    assert main(["train", "--dynamics", "crazyflie", "--out", str(out), "--init_checkpoint", str(source),
                 "--lr", "1e-6"] + TINY) == 0
    run = out / "crazyflie"
    rows = list(csv.DictReader((run / "curve.csv").open()))
    # the starting point is evaluated first, under its own iteration; training continues after it
    assert [int(r["iteration"]) for r in rows] == [start["iter"], start["iter"] + 1, start["iter"] + 2]
    assert int(rows[0]["env_steps"]) == 0
    side = json.loads((run / "teacher.json").read_text())
    assert side["options"]["init_checkpoint"] == str(source / name)
    assert side["training"]["iterations"] == start["iter"] + 3
    first = torch.load(run / f"model_{start['iter'] + 2}.pt", weights_only=True)
    assert first["iter"] == start["iter"] + 2
    # row 0 is the source teacher itself: the same evaluation (env seed + 10000, episode seed + iteration) of the
    # exported checkpoint gives the same figures
    from eyas.teachers.evaluate import evaluate_actor

    env = PointControlEnv(num_envs=8, dynamics=model_params("crazyflie"), seed=10_000)
    again = evaluate_actor(load_teacher(source), env, 8, seed=start["iter"])
    assert float(rows[0]["return_mean"]) == pytest.approx(again["return_mean"], rel=1e-5)
    assert not torch.equal(first["actor_state_dict"]["mlp.0.weight"], start["actor_state_dict"]["mlp.0.weight"])


def test_init_checkpoint_errors_are_one_line(runs, tmp_path, capsys):
    assert main(["train", "--dynamics", "crazyflie", "--out", str(tmp_path),
                 "--init_checkpoint", str(tmp_path / "nowhere")] + TINY) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "crazyflie").exists()
    # a checkpoint of another architecture (here: wider actor) is refused by name, and no run directory is left
    other = tmp_path / "other"
    assert main(["train", "--dynamics", "crazyflie", "--out", str(other), "--init_checkpoint",
                 str(runs / "crazyflie"), *TINY[:-6], "--actor_hidden", "32", "--critic_hidden", "16", "--num_threads", "1"]) == 2
    err = capsys.readouterr().err
    assert "--init_checkpoint" in err and "architecture" in err and len(err.strip().splitlines()) == 1
    assert not (other / "crazyflie").exists()

