"""Collection (teacher forcing, DAgger, position-offset correction) and the epoch loop (checkpoints, TensorBoard,
best actor, export, resume) on small settings with in-memory teachers."""
import json

import pytest
import torch
from torch import nn

from eyas import sim
from eyas.distill.collect import collect, draw_seed, env_with_dynamics, episode_params, estimate_position_offsets
from eyas.teachers import Block, TeacherBank
from eyas.distill.dataset import EpisodeDataset
from eyas.distill.runner import DistillationRunner, DistillConfig
from eyas.envs import PointControlEnvCfg
from eyas.model import StudentPolicy
from eyas.teachers import Teacher

torch.set_num_threads(1)


def linear_teacher(seed: int, params=None, num_obs: int = 74) -> Teacher:
    """Deterministic affine teacher on the privileged observation: crude, but its actions depend on the state."""
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(num_obs, 4))
    with torch.no_grad():
        net[0].weight.copy_(0.3 * torch.randn(4, num_obs, generator=g))
        net[0].bias.fill_(0.4)
    return Teacher(net, num_obs=num_obs, obs_group="teacher", params=params, name=f"linear{seed}")


@pytest.fixture(scope="module")
def teachers():
    return [linear_teacher(1, sim.model_params("crazyflie")), linear_teacher(2, None),
            linear_teacher(3, sim.model_params("x500"))]


def test_teacher_bank_stacked_equals_per_teacher(teachers):
    bank = TeacherBank(teachers)
    assert bank.stacked
    env = env_with_dynamics(PointControlEnvCfg(), episode_params(teachers, Block(0, 3, 5), PointControlEnvCfg(),
                                                        torch.Generator().manual_seed(0)), 0, "cpu")
    obs = env.get_observations()
    got = bank.act(obs, Block(0, 3, 5))
    want = torch.cat([t.act(obs["teacher"][5 * i:5 * i + 5]) for i, t in enumerate(teachers)])
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    assert torch.equal(bank.act(obs[5:10], Block(1, 1, 5)), teachers[1].act(obs["teacher"][5:10]))
    # teachers reading the leading 26 columns (RAPTOR's pre-training teachers) through obs_slice
    sliced = [linear_teacher(s, None, 26) for s in (7, 8, 9)]
    for t in sliced:
        t.obs_slice = (0, 26)
    got = TeacherBank(sliced).act(obs, Block(0, 3, 5))
    want = torch.cat([t.act(obs["teacher"][5 * i:5 * i + 5, :26]) for i, t in enumerate(sliced)])
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def _collect(bank, seed, **kw):
    ds = EpisodeDataset(len(bank) * 4 * 500, 22, 4)
    stats = collect(bank, PointControlEnvCfg(), num_episodes=4, num_envs=8, generator=torch.Generator().manual_seed(seed),
                    device="cpu", dataset=ds, **kw)
    return ds, stats


def test_teacher_forcing_stores_teacher_actions_and_offset_correction(teachers):
    bank = TeacherBank(teachers)
    ds, stats = _collect(bank, 3)
    n = ds.num_steps
    assert ds.num_episodes == 12 and stats.mean_return.shape == (3,)
    assert ds.episode_teacher[:12].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    # the teacher flew: the action history in the next observation is the stored label of this step
    for e in range(12):
        s, length = int(ds.episode_start[e]), int(ds.episode_length[e])
        if length > 1:
            torch.testing.assert_close(ds.observations[s + 1:s + length, 18:22], ds.targets[s:s + length - 1].clamp(-1, 1))
    # the same epoch with offsets: positions shift by each teacher's offset, nothing else changes
    offsets = torch.tensor([[0.1, -0.2, 0.3], [0.0, 0.0, 0.0], [-0.5, 0.25, 1.0]])
    shifted, _ = _collect(bank, 3, position_offsets=offsets)
    assert shifted.num_steps == n
    per_step = offsets[ds.episode_teacher[:12]].repeat_interleave(ds.episode_length[:12], 0)
    torch.testing.assert_close(shifted.observations[:n, :3], ds.observations[:n, :3] - per_step)
    assert torch.equal(shifted.observations[:n, 3:], ds.observations[:n, 3:])
    assert torch.equal(shifted.targets[:n], ds.targets[:n])


def test_dagger_student_flies_from_its_initial_state_and_teacher_labels(teachers):
    bank = TeacherBank(teachers)
    student = StudentPolicy(22, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        student.initial_hidden_state.normal_(0, 0.5)  # resets must be visible
    ds, _ = _collect(bank, 4, student=student)
    for e in range(ds.num_episodes):
        s, length = int(ds.episode_start[e]), int(ds.episode_length[e])
        obs = ds.observations[s:s + length]
        with torch.no_grad():
            acted, _ = student.act(obs.unsqueeze(1))  # from the initial state at the episode's first step
        if length > 1:
            torch.testing.assert_close(obs[1:, 18:22], acted[:-1, 0], rtol=1e-5, atol=1e-6)
            assert not torch.allclose(obs[1:, 18:22], ds.targets[s:s + length - 1])  # labels are the teacher's
    # labels are the teachers' actions on the states the student visited: with teachers reading the policy
    # observation, they can be recomputed from the stored observations
    policy_teachers = [linear_teacher(5, sim.model_params("crazyflie"), 22), linear_teacher(6, None, 22)]
    for t in policy_teachers:
        t.obs_group = "policy"
    ds, _ = _collect(TeacherBank(policy_teachers), 5, student=student)
    for e in range(ds.num_episodes):
        s, length = int(ds.episode_start[e]), int(ds.episode_length[e])
        teacher = policy_teachers[int(ds.episode_teacher[e])]
        torch.testing.assert_close(ds.targets[s:s + length], teacher.act(ds.observations[s:s + length]),
                                   rtol=1e-6, atol=1e-6)  # stacked (vmap) vs single evaluation: rounding only


def test_offset_estimation_window(teachers):
    """Window [0, 1): the offset is the mean initial position of each teacher's episodes."""
    bank = TeacherBank(teachers)
    g = torch.Generator().manual_seed(9)
    offsets, stats = estimate_position_offsets(bank, PointControlEnvCfg(), num_episodes=6, window=(0, 1), num_envs=100,
                                               generator=g, device="cpu")
    g = torch.Generator().manual_seed(9)
    params = episode_params(teachers, Block(0, 3, 6), PointControlEnvCfg(), g)
    env = env_with_dynamics(PointControlEnvCfg(), params, draw_seed(g), "cpu")
    expected = env.state.position.view(3, 6, 3).mean(1)
    torch.testing.assert_close(offsets, expected)
    assert stats.mean_return.shape == (3,) and bool((stats.mean_length >= 1).all())


def _cfg(tmp_path, name, **kw):
    base = dict(n_epochs=3, epoch_teacher_forcing=1, num_episodes=6, batch_size=4, sequence_length=16, num_envs=18,
                min_teacher_return=-1e9, offset_episodes=4, eval_episodes=4, eval_registry_episodes=1,
                eval_models=["crazyflie"], final_eval_episodes=4, log_dir=str(tmp_path / name), seed=3, plots=False,
                device="cpu")
    base.update(kw)
    return DistillConfig.from_flags(**base)


def test_run_writes_checkpoints_tensorboard_and_exports(tmp_path, teachers):
    summary = DistillationRunner(_cfg(tmp_path, "a", plots=True), teachers=teachers, progress=False).run()
    run = tmp_path / "a"
    for e in range(3):
        assert (run / "checkpoints" / str(e) / "actor.h5").is_file() and (run / "checkpoints" / str(e) / "actor.pt").is_file()
    for f in ("best_actor.h5", "best_actor.pt", "final_actor.h5", "summary.json", "history.json", "config.json",
              "training.png", "flights.png"):
        assert (run / f).is_file(), f
    assert not list(run.rglob(".*.tmp"))
    assert summary["foundation_policy_check"] == {"checked": True, "ok": True}
    # teacher 1 has no dynamics parameters (privileged, randomised): it is evaluated on the same held-out set
    assert summary["privileged_teachers_on_held_out"]["teachers"] == 1
    assert summary["best_epoch"] in (1, 2) and summary["gradient_steps"] > 0
    # best actor = the student that flew in the best DAgger epoch, before that epoch's training
    from eyas.rltools_h5 import load_rltools_h5
    best = load_rltools_h5(run / "best_actor.h5")
    chosen = load_rltools_h5(run / "checkpoints" / str(summary["best_epoch"] - 1) / "actor.h5")
    for k, v in best.rltools_parameters().items():
        assert torch.equal(v, chosen.rltools_parameters()[k])
    history = json.loads((run / "history.json").read_text())["history"]
    assert [r["actor"] for r in history] == ["teacher", "student", "student"]
    returns = [r["evaluation"]["return_mean"] for r in history[1:]]
    assert summary["best_collection_return"] == max(returns)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(run)).Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in ("loss", "evaluation/return/mean", "evaluation/return/std", "evaluation/episode_length/mean",
                "evaluation/share_terminated", "crazyflie/return/mean", "crazyflie/share_terminated",
                "randomized/return/mean"):
        assert tag in tags, tag
    assert len(acc.Scalars("loss")) == summary["gradient_steps"]
    _check_position_error_reporting(summary, history, run)


def _check_position_error_reporting(summary, history, run):
    """Final position error and its interval for every group; RAPTOR and the teacher on the same final episodes;
    RAPTOR on the per-epoch evaluation's episodes; one console row per group."""
    from eyas.distill.report import position_error_table

    for evals in (summary["final_eval"], summary["raptor_final_eval"], summary["teacher_final_eval"]):
        assert set(evals) == {"randomized", "crazyflie"}
        assert [evals[g]["episodes"] for g in evals] == [summary["final_eval"][g]["episodes"] for g in evals]
    raptor = summary["raptor_final_eval"]["crazyflie"]
    low, high = raptor["position_error_ci95"]
    assert 0 < low <= raptor["position_error_mean"] <= high < 0.2  # RAPTOR holds the Crazyflie within centimetres
    assert json.loads((run / "history.json").read_text())["teacher_eval"]["raptor_eval"].keys() == \
        history[-1]["eval"].keys()
    table = position_error_table(summary)
    assert [line.split()[0] for line in table[2:]] == ["randomized", "crazyflie"] and "RAPTOR" in table[1]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    assert "crazyflie/position_error/mean" in EventAccumulator(str(run)).Reload().Tags()["scalars"] or \
        all(r["eval"]["crazyflie"]["share_terminated"] == 1 for r in history if "eval" in r)


def test_resume_continues_exactly(tmp_path, teachers):
    full = DistillationRunner(_cfg(tmp_path, "full"), teachers=teachers, progress=False)
    full.run()
    part = DistillationRunner(_cfg(tmp_path, "part", n_epochs=2), teachers=teachers, progress=False)
    part.run()
    resumed = DistillationRunner(_cfg(tmp_path, "part"), teachers=teachers, resume=True, progress=False)
    resumed.run()
    a, b = full.trainer.student.state_dict(), resumed.trainer.student.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert full.trainer.num_updates == resumed.trainer.num_updates
    assert full.state.loss_steps == resumed.state.loss_steps
    with pytest.raises(Exception, match="already finished"):
        DistillationRunner(_cfg(tmp_path, "part"), teachers=teachers, resume=True, progress=False).run()
    with pytest.raises(Exception, match="settings differ"):
        DistillationRunner(_cfg(tmp_path, "part", n_epochs=5, batch_size=8), teachers=teachers, resume=True,
                           progress=False).run()


def test_run_state_is_saved_at_checkpoint_epochs(tmp_path, teachers, monkeypatch):
    """--checkpoint_every N: the actor and the run state every N epochs and at the last (a resume replays the rest)."""
    from eyas.distill import checkpoint

    saved, save = [], checkpoint.save_run_state
    monkeypatch.setattr(checkpoint, "save_run_state", lambda log_dir, state: (saved.append(state["epoch"]),
                                                                              save(log_dir, state)))
    run = tmp_path / "every2"
    DistillationRunner(_cfg(tmp_path, "every2", checkpoint_every=2), teachers=teachers, progress=False).run()
    assert saved == [1, 2]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["1", "2"]


def test_aggregating_dataset_grows(tmp_path, teachers):
    runner = DistillationRunner(_cfg(tmp_path, "agg", on_policy=False, n_epochs=2), teachers=teachers, progress=False)
    runner.run()
    steps = [r["dataset_steps"] for r in runner.state.history]
    assert steps[1] > steps[0] and runner.state.history[1]["dataset_episodes"] == 2 * 3 * 6


def test_recurrent_teacher_starts_every_episode_from_its_initial_state():
    """The released RAPTOR student as a teacher (rl-tools resets a teacher's state at episode starts): its labels
    equal the policy run from its initial state over each stored episode."""
    from eyas.teachers import load_teachers

    teacher = load_teachers(["foundation_policy"])[0]
    assert teacher.is_recurrent and teacher.obs_group == "policy"
    bank = TeacherBank([teacher, teacher])
    ds, stats = _collect(bank, 11)
    assert float(stats.mean_length.min()) > 20  # RAPTOR flies
    for e in range(ds.num_episodes):
        s, length = int(ds.episode_start[e]), int(ds.episode_length[e])
        with torch.no_grad():
            expected, _ = teacher.policy.act(ds.observations[s:s + length].unsqueeze(1))
        torch.testing.assert_close(ds.targets[s:s + length], expected[:, 0], rtol=1e-5, atol=1e-6)


def test_init_student_starts_from_the_given_weights(tmp_path, teachers):
    """--init_student: the run's first student is the given one (a previous run's .pt, or an rl-tools .h5)."""
    first = DistillationRunner(_cfg(tmp_path, "first", n_epochs=2), teachers=teachers, progress=False)
    first.run()
    trained = first.trainer.student.state_dict()
    for source in (tmp_path / "first" / "final_actor.pt", tmp_path / "first" / "final_actor.h5"):
        runner = DistillationRunner(_cfg(tmp_path, f"from_{source.suffix[1:]}", init_student=str(source)),
                                    teachers=teachers, progress=False)
        start = runner.setup.new_student().state_dict()
        for k in trained:
            torch.testing.assert_close(start[k], trained[k], rtol=0, atol=0, msg=k)
    fresh = DistillationRunner(_cfg(tmp_path, "fresh"), teachers=teachers, progress=False).setup.new_student().state_dict()
    assert not torch.equal(fresh["gru.weight_hh_l0"], trained["gru.weight_hh_l0"])


def test_a_truncated_latest_state_falls_back_to_the_previous_one(tmp_path, teachers, capsys):
    """The last two complete states are kept; an unreadable state.pt resumes from state.prev.pt (one notice) and
    still ends exactly like an uninterrupted run."""
    full = DistillationRunner(_cfg(tmp_path, "full"), teachers=teachers, progress=False)
    full.run()
    DistillationRunner(_cfg(tmp_path, "part", n_epochs=2), teachers=teachers, progress=False).run()
    state = tmp_path / "part" / "state.pt"
    assert (tmp_path / "part" / "state.prev.pt").is_file()
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])  # a crash mid-write of a non-atomic copy
    capsys.readouterr()
    resumed = DistillationRunner(_cfg(tmp_path, "part"), teachers=teachers, resume=True, progress=False)
    notice = [line for line in capsys.readouterr().err.splitlines() if "state.prev.pt" in line]
    assert len(notice) == 1 and "resuming from state.prev.pt (epoch 0)" in notice[0]
    assert resumed.state.epoch == 0  # epoch 0 is done: the run goes on from epoch 1
    resumed.run()
    a, b = full.trainer.student.state_dict(), resumed.trainer.student.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_a_second_writer_on_the_same_run_directory_is_refused(tmp_path, teachers):
    from eyas.distill.checkpoint import RunLock
    from eyas.distill.dataset import DistillationError

    lock = RunLock(tmp_path / "busy")
    try:
        with pytest.raises(DistillationError, match=r"busy is being written by eyas distill \(pid \d+\)"):
            DistillationRunner(_cfg(tmp_path, "busy"), teachers=teachers, progress=False).run()
    finally:
        lock.release()
    assert not (tmp_path / "busy" / "state.pt").exists()


def test_resume_from_another_working_directory(tmp_path, monkeypatch):
    """Teacher paths are stored absolute: a run started with a relative path resumes from anywhere."""
    from test_distill_inputs import main, write_teacher

    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    write_teacher(tmp_path / "work" / "teacher.h5")
    args = ["--log_dir", str(tmp_path / "run"), "--device", "cpu", "--quiet", "--num_envs", "16", "--num_episodes", "4",
            "--offset_episodes", "2", "--min_teacher_return=-1e9", "--batch_size", "2", "--sequence_length", "8",
            "--eval_episodes", "2", "--eval_registry_episodes", "0", "--final_eval_episodes", "2", "--plots", "false"]
    assert main(["--teacher_checkpoint", "teacher.h5", "--n_epochs", "1", *args]) == 0
    monkeypatch.chdir(tmp_path)
    assert main(["--resume", "--n_epochs", "2", *args]) == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["teacher_checkpoint"] == [str(tmp_path / "work" / "teacher.h5")]


def test_the_final_scorecard_flies_every_case_beside_raptor(tmp_path, teachers, monkeypatch):
    """--final_scorecard_episodes N: the summary carries eyas evaluate's cases (here two groups of two, for time) for
    the best actor and RAPTOR, and the run's report has one line per case; without it, none is flown."""
    from eyas.distill import report
    from eyas.scorecard.selection import selection_cases

    monkeypatch.setattr(report, "default_cases", lambda: selection_cases(["hover/randomized", "wind/crazyflie"]))
    summary = DistillationRunner(_cfg(tmp_path, "card", n_epochs=1, final_scorecard_episodes=2), teachers=teachers,
                                 progress=False).run()
    card = summary["scorecard"]
    assert {case: list(groups) for case, groups in card["results"].items()} == {"hover": ["randomized"],
                                                                                "wind": ["crazyflie"]}
    for groups in card["results"].values():
        for row in groups.values():
            assert set(row) == {"student", "raptor"} and row["student"]["episodes"] == 2
            assert "per_episode" not in row["student"]
    out = "\n".join(report.summary_lines(summary, "task", str(tmp_path / "card"), plots=False))
    assert "the scorecard" in out and "\n  hover " in out and "\n  wind " in out
    assert DistillationRunner(_cfg(tmp_path, "none", n_epochs=1), teachers=teachers,
                              progress=False).run()["scorecard"] is None
