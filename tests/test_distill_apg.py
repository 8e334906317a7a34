"""APG fine-tuning (`eyas.distill.apg`): it flies the env's own episodes, its gradient is the derivative of its
loss, and `eyas distill --apg_iterations` runs, exports, selects and resumes like the distillation epochs."""
import dataclasses
import json

import pytest
import torch

from eyas import sim
from eyas.distill.apg import AnalyticPolicyGradient, APGConfig
from eyas.distill.collect import episode_env
from eyas.teachers import Block, TeacherBank
from eyas.distill.runner import DistillationRunner
from eyas.envs import PointControlEnvCfg
from eyas.model import StudentPolicy

from test_distill_runner import _cfg, linear_teacher

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def teachers():
    return [linear_teacher(2, None), linear_teacher(1, sim.model_params("crazyflie"))]


def _apg(teachers, env_cfg=None, dtype=torch.float32, seed=5, **kw):
    student = StudentPolicy(22, 4, generator=torch.Generator().manual_seed(0)).to(dtype)
    cfg = APGConfig(**({"envs": 16, "horizon": 40} | kw))
    return AnalyticPolicyGradient(student, TeacherBank(teachers), env_cfg or PointControlEnvCfg(), cfg,
                                  generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("student", ["random", "raptor"])
def test_apg_flies_the_episodes_the_env_flies(teachers, student):
    """Same draws, same student: APG's differentiable flights equal `PointControlEnv.step`'s, step by step, and end
    (terminate) at the same step. A random student crashes every episode, the released RAPTOR policy flies."""
    apg = _apg(teachers[:1], horizon=120, envs=32)
    if student == "raptor":
        from eyas import load_rltools_h5, raptor_checkpoint_path
        apg.student = load_rltools_h5(raptor_checkpoint_path())
    steps = list(apg.fly())
    env = episode_env(teachers[:1], Block(0, 1, 32), PointControlEnvCfg(), torch.Generator().manual_seed(5), "cpu")
    policy = apg.student
    policy.reset(batch_size=32)
    alive = torch.ones(32, dtype=torch.bool)
    with torch.no_grad():
        for t, step in enumerate(steps):
            assert torch.equal(step.alive, alive), t
            torch.testing.assert_close(step.state.position[alive], env.state.position[alive])
            torch.testing.assert_close(step.state.rpm[alive], env.state.rpm[alive])
            obs = env.get_observations()
            torch.testing.assert_close(step.labels[alive], teachers[0].act_on(obs)[alive])
            _, _, dones, extras = env.step(policy(obs["policy"]))
            assert torch.equal(step.terminated, extras["terminated"] & alive), t
            alive &= ~dones.bool()
    running = int(alive.sum())
    assert running == 0 if student == "random" else running >= 28, running


def test_registry_share_flies_the_models_in_the_last_rows(teachers):
    """--apg_registry_share: the last rows of a privileged teacher's part fly the registry models in turn; the other
    rows keep the randomised dynamics (and initial states' seed) they get without it; per-dynamics teachers keep
    their own dynamics."""
    mixed, plain = _apg(teachers[:1], envs=20, registry_share=0.4), _apg(teachers[:1], envs=20)
    env, ref = mixed._episode_env(mixed._block()), plain._episode_env(plain._block())
    mass, names = env.params.dynamics.mass, sim.MODEL_NAMES
    torch.testing.assert_close(mass[:12], ref.params.dynamics.mass[:12], rtol=0, atol=0)
    expected = torch.stack([sim.model_params(names[i % len(names)]).dynamics.mass[0] for i in range(8)])
    torch.testing.assert_close(mass[12:], expected, rtol=0, atol=0)
    assert not torch.equal(mass[12:], ref.params.dynamics.mass[12:])
    torch.testing.assert_close(env.state.position[:12], ref.state.position[:12], rtol=0, atol=0)
    fixed = _apg(teachers[1:], envs=10, registry_share=0.5)
    crazyflie = float(sim.model_params("crazyflie").dynamics.mass[0])
    assert torch.all(fixed._episode_env(fixed._block()).params.dynamics.mass == crazyflie)


def test_apg_gradient_is_the_derivative_of_its_loss():
    """Float64: the directional derivative of the APG loss along a random parameter direction equals the central
    finite difference (same episodes every call). Catches a graph cut anywhere (student, GRU, dynamics).

    Teacher labels are targets (no gradient flows into them), so the check uses teachers with constant actions,
    whose labels do not move with the student's states either."""
    constant = [linear_teacher(2, None), linear_teacher(1, sim.model_params("crazyflie"))]
    for t in constant:
        t.net[0].weight.data.zero_()
    env_cfg = PointControlEnvCfg(dtype="float64")
    apg = _apg(constant, env_cfg, torch.float64, horizon=25, envs=8)
    apg.student.gradient_mode = "exact"  # rl-tools' GRU gradients leave out the initial state's (docs/gradients.md)
    start = apg.generator.get_state()

    def loss():
        apg.generator.set_state(start)
        apg._next_teacher = 0
        return apg.loss()[0]

    assert_directional_derivative(loss, [p for p in apg.student.parameters() if p.requires_grad])


@pytest.mark.compiled
def test_compiled_apg_gradient_equals_the_eager_one():
    """Float64, the same episodes: APG under torch.compile (the flight step fused forward and backward by inductor)
    gives the eager loss and gradient up to the round-off of a reordered sum over 30 steps of flight (measured
    ~1e-13 relative; a dropped term or a graph cut is O(1e-2) or more)."""
    results = []
    for compiled in (False, True):
        apg = _apg([linear_teacher(2, None)], PointControlEnvCfg(dtype="float64", compile=compiled), torch.float64,
                   horizon=30, envs=12, steady_weight=5, steady_start=10)
        apg.student.gradient_mode = "exact"  # every parameter, the initial state included, gets its gradient
        loss = apg.loss()[0]
        params = [p for p in apg.student.parameters() if p.requires_grad]
        results.append((loss.detach(), torch.autograd.grad(loss, params)))
    (loss_e, grads_e), (loss_c, grads_c) = results
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-10, atol=0)
    for g_e, g_c in zip(grads_e, grads_c):
        torch.testing.assert_close(g_c, g_e, rtol=1e-8, atol=1e-12)
    assert all(float(g.abs().max()) > 0 for g in grads_e)


def assert_directional_derivative(loss, params: list, eps: float = 1e-6) -> None:
    """autograd's derivative of ``loss()`` along a random direction equals the central finite difference; the
    parameters are left as they were."""
    g = torch.Generator().manual_seed(1)
    direction = [torch.randn(p.shape, generator=g, dtype=p.dtype).to(p.device) for p in params]
    value = loss()
    grads = torch.autograd.grad(value, params, allow_unused=True)
    analytic = sum(float((gr * d).sum()) for gr, d in zip(grads, direction) if gr is not None)
    with torch.no_grad():
        for p, d in zip(params, direction):
            p.add_(eps * d)
        plus = float(loss())
        for p, d in zip(params, direction):
            p.sub_(2 * eps * d)
        minus = float(loss())
        for p, d in zip(params, direction):
            p.add_(eps * d)
    numeric = (plus - minus) / (2 * eps)
    assert abs(analytic) > 1e-4
    # central difference error O(eps^2 f''') plus round-off O(1e-16 f / eps): far below 1e-6 relative here
    assert analytic == pytest.approx(numeric, rel=1e-5)


def test_apg_update_moves_the_student_and_reports(teachers):
    apg = _apg(teachers, envs=8, horizon=20)
    before = {k: v.clone() for k, v in apg.student.state_dict().items()}
    stats = apg.update()
    assert set(stats) >= {"loss", "cost", "imitation", "terminated", "grad_norm", "skipped"}
    assert not stats["skipped"] and all(torch.isfinite(torch.tensor(stats[k])) for k in ("loss", "cost", "grad_norm"))
    moved = [k for k, v in apg.student.state_dict().items() if not torch.equal(v, before[k])]
    assert "output_layer.weight" in moved and "gru.weight_hh_l0" in moved and apg.iteration == 1
    # rows cycle through the teachers: 2 teachers, 8 rows -> both every step, 4 episodes each
    assert (apg.teachers_per_batch, apg.per_teacher) == (2, 4)


def test_run_with_apg_phase(tmp_path, teachers):
    """A run with an APG phase (its weights averaged: --apg_average_decay) exports, selects and logs it."""
    cfg = _cfg(tmp_path, "apg", plots=True, apg_iterations=4, apg_eval_every=2, apg_envs=8, apg_horizon=20,
               apg_eval_episodes=4, apg_average_decay=0.5, apg_select_cases=["hover/randomized", "wind/crazyflie"])
    runner = DistillationRunner(cfg, teachers=teachers, progress=False)
    summary = runner.run()
    run = tmp_path / "apg"
    for f in ("distilled_actor.h5", "best_actor.h5", "final_actor.h5", "checkpoints/apg_2/actor.h5",
              "checkpoints/apg_4/actor.pt", "training.png"):
        assert (run / f).is_file(), f
    apg = summary["apg"]
    assert apg["iterations"] == 4 and apg["best_iteration"] in (0, 2, 4)
    assert "randomized" in apg["distilled_actor_final_eval"]
    assert summary["foundation_policy_check"] == {"checked": True, "ok": True}
    rows = json.loads((run / "history.json").read_text())["apg"]
    assert [r["iteration"] for r in rows] == [0, 2, 4]
    accepted = [r["iteration"] for r in rows if r["selection"].startswith("new best")]
    assert apg["best_iteration"] == accepted[-1]
    assert set(rows[0]["eval"]) == {"hover/randomized", "wind/crazyflie"}  # the selection's groups, no others
    from eyas.rltools_h5 import load_rltools_h5
    best = load_rltools_h5(run / "best_actor.h5").rltools_parameters()
    source = "distilled_actor.h5" if apg["best_iteration"] == 0 else f"checkpoints/apg_{apg['best_iteration']}/actor.h5"
    for k, v in load_rltools_h5(run / source).rltools_parameters().items():
        assert torch.equal(v, best[k]), k
    # what was evaluated and exported is the average, not the weights Adam stepped last
    final = load_rltools_h5(run / "final_actor.h5").rltools_parameters()
    stepped = runner.state.finetune.trainer["student"]
    assert runner.state.finetune.trainer["average"]["n_averaged"] == 4
    for k, v in load_rltools_h5(run / "checkpoints/apg_4/actor.h5").rltools_parameters().items():
        assert torch.equal(v, final[k]), k
    assert not torch.equal(runner.state.final_student["output_layer.weight"], stepped["output_layer.weight"])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    tags = set(EventAccumulator(str(run)).Reload().Tags()["scalars"])
    for tag in ("apg/loss", "apg/cost", "apg/imitation", "apg/terminated", "apg/hover/randomized/return/mean"):
        assert tag in tags, tag


def test_apg_flies_the_apg_env_presets_in_turn_then_the_runs_mdp(teachers):
    """--apg_env A B --apg_env_steps 1 1: step 0 flies A's MDP, step 1 B's (the rest of the run's env config kept),
    then the run's; without --apg_env, always the run's; a last preset without a count flies every step left."""
    from eyas.envs.scenario import MIXED, SMOOTH

    run_env = PointControlEnvCfg(num_envs=8, privileged=True)
    apg = _apg(teachers, run_env, env=["mixed", "smooth"], env_steps=[1, 1], envs=4, horizon=3)
    assert apg.flight_env_cfg.scenario == MIXED and apg.flight_env_cfg.privileged
    assert apg.flight_env_cfg.num_envs == 8 and run_env.scenario not in (MIXED, SMOOTH)
    assert apg._episode_env(apg._block()).cfg.scenario == MIXED
    apg.update()
    assert apg.flight_env_cfg.scenario == SMOOTH
    apg.update()
    assert apg.iteration == 2 and apg.flight_env_cfg is run_env
    assert _apg(teachers, run_env).flight_env_cfg is run_env
    assert [APGConfig(env=["mixed", "raptor"], env_steps=[2]).flight_mdp(i) for i in (0, 1, 2, 99)] == [
        "mixed", "mixed", "raptor", "raptor"]


def test_resume_in_the_apg_phase_continues_exactly(tmp_path, teachers):
    kw = dict(apg_eval_every=2, apg_envs=8, apg_horizon=20, apg_eval_episodes=4, apg_select_cases=["hover/randomized"])
    full = DistillationRunner(_cfg(tmp_path, "full", apg_iterations=4, **kw), teachers=teachers, progress=False)
    full.run()
    part = DistillationRunner(_cfg(tmp_path, "part", apg_iterations=2, **kw), teachers=teachers, progress=False)
    part.run()
    resumed = DistillationRunner(_cfg(tmp_path, "part", apg_iterations=4, **kw), teachers=teachers, resume=True,
                                 progress=False)
    resumed.run()
    a, b = full.state.final_student, resumed.state.final_student
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [r["cost"] for r in full.state.finetune.history] == [r["cost"] for r in resumed.state.finetune.history]
    with pytest.raises(Exception, match="already finished"):
        DistillationRunner(_cfg(tmp_path, "part", apg_iterations=4, **kw), teachers=teachers, resume=True,
                           progress=False).run()
    # a finished run without APG can be fine-tuned later
    plain = DistillationRunner(_cfg(tmp_path, "plain", **kw), teachers=teachers, progress=False)
    plain.run()
    later = DistillationRunner(_cfg(tmp_path, "plain", apg_iterations=2, **kw), teachers=teachers, resume=True,
                               progress=False)
    assert later.run()["apg"]["iterations"] == 2
    with pytest.raises(Exception, match="APG phase"):
        DistillationRunner(_cfg(tmp_path, "part", apg_iterations=6, **(kw | {"apg_horizon": 30})), teachers=teachers,
                           resume=True, progress=False).run()


@pytest.mark.parametrize("flag, value, message", [("--apg_horizon", 0, "--apg_horizon must be >= 1"),
                                                  ("--apg_horizon", 501, "exceeds the episode length 500"),
                                                  ("--apg_learning_rate", -1, "--apg_learning_rate must be a positive"),
                                                  ("--apg_barrier_start", 1.5, "--apg_barrier_start must be in"),
                                                  ("--apg_registry_share", 1, "--apg_registry_share must be in"),
                                                  ("--apg_env_steps", -1, "--apg_env_steps needs --apg_env"),
                                                  ("--apg_env", ["mixed", "--apg_env_steps", 10, 20],
                                                   "one count per --apg_env")])
def test_bad_apg_settings(tmp_path, capsys, flag, value, message):
    from test_distill_inputs import check_error, run, write_teacher

    rc, log_dir = run(tmp_path, "--teacher_checkpoint", write_teacher(tmp_path / "t.h5"), "--apg_iterations", 5,
                      flag, *(value if isinstance(value, list) else [value]))
    check_error(capsys, rc, log_dir, message)


def test_apg_settings_are_one_list():
    """Every APGConfig field is an --apg_<name> flag with the field's default, and reaches DistillConfig.apg."""
    from eyas.distill.cli import build_parser, config_from_args
    from eyas.distill.config import DistillConfig

    flags = {a.dest for a in build_parser()._actions if a.dest.startswith("apg_")}
    assert {f"apg_{f.name}" for f in dataclasses.fields(APGConfig)} == flags
    defaults = build_parser().parse_args([])
    assert {f.name: getattr(defaults, f"apg_{f.name}") for f in dataclasses.fields(APGConfig)} == \
        dataclasses.asdict(APGConfig())
    assert DistillConfig().apg == APGConfig()
    assert config_from_args(build_parser().parse_args(["--apg_envs", "9"])).apg.envs == 9
    args = build_parser().parse_args(["--apg_horizon", "7", "--apg_barrier_start", "0.5"])
    assert (args.apg_horizon, args.apg_barrier_start) == (7, 0.5)


def test_a_window_is_the_flight_cut_after_its_steps(teachers):
    """--apg_window W: the first window's loss and gradient are those of a flight of horizon W on the same episodes
    (truncated backpropagation cuts the graph there and nothing else); the flight then carries on, one Adam step per
    window."""
    cut = _apg(teachers[:1], envs=16, horizon=30, window=10)
    short = _apg(teachers[:1], envs=16, horizon=10)
    (loss_cut, _), (loss_short, _) = next(cut.losses()), short.loss()
    grads_cut = torch.autograd.grad(loss_cut, list(cut.student.parameters()), allow_unused=True)
    grads_short = torch.autograd.grad(loss_short, list(short.student.parameters()), allow_unused=True)
    torch.testing.assert_close(loss_cut, loss_short, rtol=0, atol=0)
    assert sum(g is not None for g in grads_cut) >= 8
    for a, b in zip(grads_cut, grads_short):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    steps = []
    original = cut.optimizer.step
    cut.optimizer.step = lambda *a, **k: (steps.append(1), original(*a, **k))
    cut.update()
    assert len(steps) == 3
    # --apg_window_steps 2: two windowed steps, then whole-horizon flights (one Adam step each)
    phased = _apg(teachers[:1], envs=16, horizon=30, window=10, window_steps=2)
    assert [phased.window() for phased.iteration in range(4)] == [10, 10, 30, 30]
    steps.clear()
    original = phased.optimizer.step
    phased.optimizer.step = lambda *a, **k: (steps.append(1), original(*a, **k))
    phased.iteration = 1
    phased.update()
    phased.update()
    assert len(steps) == 3 + 1


def test_cosine_learning_rate(teachers):
    apg = _apg(teachers[:1], envs=4, horizon=5, learning_rate=1e-3, learning_rate_final=1e-4, iterations=11)
    rates = []
    for i in (0, 5, 10):
        apg.iteration = i
        rates.append(apg.learning_rate())
    assert rates == pytest.approx([1e-3, 5.5e-4, 1e-4])
    assert _apg(teachers[:1], envs=4, horizon=5).learning_rate() == 1e-3


def test_weight_average_is_the_moving_average_of_the_steps(teachers):
    """--apg_average_decay: `evaluated` is avg_1 = w_1, avg_k = d avg_(k-1) + (1 - d) w_k over the weights after
    each step, Adam keeps stepping the last weights, and the average survives state_dict / load_state_dict."""
    decay = 0.75
    apg = _apg(teachers, envs=8, horizon=10, average_decay=decay)
    assert apg.evaluated is apg.student  # nothing averaged before the first step
    expected = None
    for _ in range(3):
        apg.update()
        weights = {k: v.detach().clone() for k, v in apg.student.state_dict().items()}
        expected = weights if expected is None else {k: decay * expected[k] + (1 - decay) * weights[k]
                                                     for k in weights}
    averaged = apg.evaluated.state_dict()
    assert apg.evaluated is not apg.student
    for k, v in expected.items():
        torch.testing.assert_close(averaged[k], v, rtol=1e-6, atol=1e-7)
    last = apg.student.state_dict()  # the weights Adam steps are not the average (h0 stays fixed: rl-tools mode)
    assert not torch.equal(averaged["output_layer.weight"], last["output_layer.weight"])
    copy = _apg(teachers, envs=8, horizon=10, average_decay=decay)
    copy.load_state_dict(apg.state_dict())
    for k, v in copy.evaluated.state_dict().items():
        assert torch.equal(v, averaged[k]), k
    with pytest.raises(Exception, match="--apg_average_decay must be in"):
        APGConfig(average_decay=1.0).validate()
