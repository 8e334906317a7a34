"""`eyas distill` on an Isaac Lab task, driven through a stand-in of Isaac Lab's API (tests/isaaclab_standin).

The stand-in checks the calls eyas makes (simulation app first, `parse_env_cfg`, `gym.make`, Isaac Lab's
rsl_rl wrapper) and simulates with eyas' own env; Isaac Sim itself is not run here (see its README)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

STANDIN = Path(__file__).parent / "isaaclab_standin"
TASK = "Standin-Quadcopter-Distill-v0"
PRIVILEGED = Path(__file__).parents[1] / "fixtures" / "teachers" / "privileged"
CRAZYFLIE = Path(__file__).parents[1] / "fixtures" / "teachers" / "crazyflie"


@pytest.fixture
def standin(monkeypatch):
    """Isaac Lab's packages importable from the stand-in for this test (modules dropped afterwards)."""
    import gymnasium as gym

    monkeypatch.syspath_prepend(str(STANDIN))
    yield
    for name in [m for m in sys.modules
                 if m.split(".")[0] in ("isaaclab", "isaaclab_tasks", "isaaclab_rl", "quadcopter_ext")]:
        del sys.modules[name]
    gym.registry.pop(TASK, None)


def standin_env(num_envs: int, episode_length: int, finite_horizon: bool = False):
    """The stand-in task wrapped as eyas' `launch` wraps it, with a short episode limit."""
    from isaaclab.app import AppLauncher
    AppLauncher(headless=True, device="cpu")
    import gymnasium as gym
    import isaaclab_tasks  # noqa: F401
    from isaaclab_rl.rsl_rl import RslRlVecEnvWrapper
    from isaaclab_tasks.utils import parse_env_cfg

    cfg = parse_env_cfg(TASK, device="cpu", num_envs=num_envs)
    cfg.episode_length_steps, cfg.is_finite_horizon, cfg.seed = episode_length, finite_horizon, 3
    return RslRlVecEnvWrapper(gym.make(TASK, cfg=cfg))


@pytest.mark.parametrize("finite_horizon", [False, True])
def test_episode_rows_split_terminations_from_time_outs(standin, finite_horizon):
    from eyas.envs.isaaclab_task import IsaacLabEpisodes
    from eyas.teachers import load_teacher

    teacher = load_teacher(PRIVILEGED)
    env = standin_env(num_envs=12, episode_length=100, finite_horizon=finite_horizon)
    rows = IsaacLabEpisodes(env, 8)
    assert rows.num_envs == 8 and rows.num_obs == 22 and rows.max_episode_length == 100
    assert bool((env.unwrapped.episode_length_buf == 0).all()), "every environment starts a new episode"
    obs = rows.get_observations()
    assert obs.batch_size == torch.Size([8]) and set(obs.keys()) == {"policy", "teacher"}
    flown = torch.arange(8) < 4  # rows 0-3: the teacher flies; rows 4-7: motors off, they fall
    ended_at = {}
    for t in range(200):
        actions = torch.where(flown[:, None], teacher.act_on(obs), torch.full((8, 4), -1.0))
        obs, rewards, dones, extras = rows.step(actions)
        assert obs.batch_size == torch.Size([8]) and rewards.shape == (8,) and dones.shape == (8,)
        assert not bool((extras["terminated"] & extras["time_outs"]).any())
        assert bool((dones.bool() == (extras["terminated"] | extras["time_outs"])).all())
        for i in dones.nonzero()[:, 0].tolist():
            ended_at.setdefault(i, []).append((t + 1, "terminated" if extras["terminated"][i] else "time_out"))
    for i in range(4, 8):  # falling: terminated before the limit
        assert ended_at[i][0][1] == "terminated" and ended_at[i][0][0] < 100, ended_at[i]
    timed_out = [i for i in range(4) if ended_at.get(i, [(0, "")])[0] == (100, "time_out")]
    assert len(timed_out) >= 3, ended_at  # the privileged teacher survives 1 s from nearly every start
    for i in timed_out:  # the row restarted: its second episode ends at the limit (step 200) or earlier
        assert ended_at[i][1] == (200, "time_out") or ended_at[i][1][1] == "terminated", ended_at[i]
    with pytest.raises(Exception, match=r"expected shape \(8, 4\)"):
        rows.step(torch.zeros(12, 4))


def test_task_resolution(standin, monkeypatch):
    from eyas.distill.dataset import DistillationError
    from eyas.distill.config import TASK_ID, resolve_task
    from eyas.envs.backend import capabilities
    is_embedded = lambda cfg: capabilities(cfg).name == "embedded"  # noqa: E731
    from eyas.envs.isaaclab_task import IsaacLabTask, isaaclab_installed, isaaclab_registers

    assert isaaclab_installed() and isaaclab_registers(TASK) and not isaaclab_registers(TASK_ID)
    task = resolve_task(TASK, num_envs=16)
    assert isinstance(task, IsaacLabTask) and task.num_envs == 16 and task._env is None, "made on first use only"
    assert is_embedded(resolve_task(TASK_ID)), "Isaac Lab does not register eyas' task: the embedded env"
    assert isinstance(resolve_task(TASK_ID, "isaaclab"), IsaacLabTask)
    assert is_embedded(resolve_task(TASK_ID, "embedded"))
    with pytest.raises(DistillationError, match="not registered by isaaclab_tasks; add its package"):
        resolve_task("Isaac-Nothing-v0")


def test_task_registered_by_an_extension_package(standin):
    """The seed's id, registered by a user's Isaac Lab extension: Isaac Lab once that package is named."""
    import gymnasium as gym

    from eyas.distill.config import TASK_ID, resolve_task
    from eyas.envs.backend import capabilities
    is_embedded = lambda cfg: capabilities(cfg).name == "embedded"  # noqa: E731
    from eyas.envs.isaaclab_task import IsaacLabTask

    assert is_embedded(resolve_task(TASK_ID)), "isaaclab_tasks alone does not register it"
    task = resolve_task(TASK_ID, num_envs=4, packages=["isaaclab_tasks", "quadcopter_ext"])
    assert isinstance(task, IsaacLabTask) and task.packages == ("isaaclab_tasks", "quadcopter_ext")
    eyas_spec = gym.registry[TASK_ID]
    try:
        with pytest.warns(UserWarning, match="Overriding environment"):  # over eyas' own registration of the id
            rows = task.episodes(4)
        assert gym.registry[TASK_ID].entry_point == "isaaclab_tasks.quadcopter:QuadcopterDistillEnv"
        assert rows.num_obs == 22
    finally:
        gym.registry[TASK_ID] = eyas_spec  # the tests that follow use the embedded env


def test_task_resolution_without_isaaclab():
    from eyas.distill.dataset import DistillationError
    from eyas.distill.config import TASK_ID, resolve_task
    from eyas.envs.backend import capabilities
    is_embedded = lambda cfg: capabilities(cfg).name == "embedded"  # noqa: E731

    assert is_embedded(resolve_task(TASK_ID))
    with pytest.raises(DistillationError, match="Isaac Lab is not installed"):
        resolve_task(TASK)
    with pytest.raises(DistillationError, match="Isaac Lab is not installed"):
        resolve_task(TASK_ID, "isaaclab")


def distill(tmp_path, *args):
    log = tmp_path / "standin.log"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(STANDIN), os.environ.get("PYTHONPATH", "")]),
               EYAS_ISAACLAB_STANDIN_LOG=str(log))
    proc = subprocess.run([sys.executable, "-m", "eyas.distill", "--task", TASK, "--device", "cpu", "--quiet",
                           "--num_threads", "1", "--log_dir", str(tmp_path / "run"), *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=600)
    launches = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return proc, launches


def test_distill_on_isaaclab_task(tmp_path):
    proc, launches = distill(tmp_path, "--teacher_checkpoint", PRIVILEGED, "--num_envs", 40, "--n_epochs", 3,
                             "--num_episodes", 40, "--batch_size", 8, "--sequence_length", 50,
                             "--epoch_teacher_forcing", 1, "--eval_episodes", 40, "--final_eval_episodes", 60,
                             "--offset_episodes", 40)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert launches == [{"event": "AppLauncher", "headless": True, "device": "cpu"}], launches
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["environment"]["backend"] == "isaaclab" and summary["environment"]["task"] == TASK
    assert summary["environment"]["config"]["num_envs"] == 40
    assert summary["held_out"] == "task" and summary["final_eval"]["task"]["episodes"] == 60
    assert summary["foundation_policy_check"] == {"checked": True, "ok": True}
    assert not (run / "flights.json").exists(), "recorded flights need the embedded env's state"
    history = json.loads((run / "history.json").read_text())
    teacher_epoch = history["history"][0]
    assert teacher_epoch["actor"] == "teacher" and teacher_epoch["evaluation"]["return_mean"] > 300
    assert teacher_epoch["dataset_episodes"] == 40  # num_episodes x one teacher, one episode per row
    assert history["offsets"] == [[0.0, 0.0, 0.0]], "l2f's steady-state offset is not applied to other tasks"
    assert summary["privileged_teachers_on_held_out"]["share_terminated"] < 0.2
    assert "task" in teacher_epoch["eval"] and "randomized" not in teacher_epoch["eval"]
    assert "task Standin-Quadcopter-Distill-v0" in proc.stdout


def test_per_dynamics_teacher_refused_on_isaaclab_task(tmp_path):
    proc, launches = distill(tmp_path, "--teacher_checkpoint", CRAZYFLIE, "--num_envs", 16, "--n_epochs", 1,
                             "--num_episodes", 8, "--batch_size", 2, "--sequence_length", 50)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("eyas distill: error:") and "per-dynamics teachers need the embedded env" in lines[0]
    assert not (tmp_path / "run").exists()


def test_too_few_task_rows(tmp_path):
    proc, _ = distill(tmp_path, "--teacher_checkpoint", PRIVILEGED, "--num_envs", 16, "--n_epochs", 1,
                      "--num_episodes", 8, "--offset_episodes", 32, "--batch_size", 2, "--sequence_length", 50)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "raise --num_envs" in lines[0], proc.stderr[-3000:]
    assert not (tmp_path / "run").exists()


def test_teacher_labels_are_not_clipped_on_isaaclab_tasks(standin, tmp_path):
    """l2f's motor commands live in [-1, 1]; on other tasks the label is the teacher's mean, as rsl_rl's act_inference."""
    from eyas.distill.runner import DistillationRunner, DistillConfig

    def runner(task):
        cfg = DistillConfig.from_flags(teacher_checkpoint=[str(PRIVILEGED)], task=task, num_envs=8, num_episodes=8, batch_size=2,
                            sequence_length=50, device="cpu", log_dir=str(tmp_path / task))
        return DistillationRunner(cfg, progress=False)

    assert runner(TASK).setup.bank.teachers[0].action_clip is None
    assert runner("Isaac-Quadcopter-Point-Ctrl-v0").setup.bank.teachers[0].action_clip == 1.0


def test_apg_refused_on_isaaclab_task(tmp_path):
    """APG differentiates through the embedded simulator; an Isaac Lab task gives one error line."""
    proc, _ = distill(tmp_path, "--teacher_checkpoint", PRIVILEGED, "--num_envs", 16, "--n_epochs", 1,
                      "--num_episodes", 8, "--offset_episodes", 8, "--batch_size", 2, "--sequence_length", 50,
                      "--apg_iterations", 10)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    assert "--apg_iterations needs a differentiable env (the embedded l2f env)" in lines[0]
    assert not (tmp_path / "run").exists()
