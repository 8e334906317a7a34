"""PointControlEnv: rsl_rl VecEnv contract, observation layouts, MDP semantics, auto-reset, evaluation."""
from __future__ import annotations

import math

import gymnasium as gym
import pytest
import torch
from rsl_rl.env import VecEnv
from tensordict import TensorDict

from eyas import sim
from eyas.envs import (
    TASK_ID,
    ObservationNoiseCfg,
    PointControlEnv,
    PointControlEnvCfg,
    TerminationCfg,
    evaluate,
    policy_observation,
)
from eyas.envs import point_control
from eyas.envs import starts as starts_module
from eyas.envs.rollout import rollout


pytestmark = pytest.mark.usefixtures("single_thread")  # fixture in tests/conftest.py


def make(**kwargs) -> PointControlEnv:
    kwargs.setdefault("num_envs", 8)
    return PointControlEnv(PointControlEnvCfg(**kwargs))


def test_vec_env_contract():
    env = make(num_envs=16)
    assert isinstance(env, VecEnv)
    assert (env.num_envs, env.num_actions, env.max_episode_length) == (16, 4, 500)
    assert env.episode_length_buf.shape == (16,) and env.device == torch.device("cpu")
    assert isinstance(env.cfg, PointControlEnvCfg) and isinstance(env.cfg.to_dict(), dict)
    obs = env.get_observations()
    assert isinstance(obs, TensorDict) and obs.batch_size == torch.Size([16])
    assert obs["policy"].shape == (16, 22) and env.num_obs == 22
    assert obs["teacher"].shape == (16, env.num_teacher_obs) and env.num_teacher_obs == 74
    obs, rewards, dones, extras = env.step(torch.zeros(16, 4))
    assert rewards.shape == (16,) and dones.shape == (16,) and dones.dtype == torch.long
    assert extras["time_outs"].dtype == torch.bool and extras["terminated"].dtype == torch.bool
    assert extras["position_error"].shape == (16,)


def test_gym_make_builds_the_vec_env():
    env = gym.make(TASK_ID, num_envs=4, dynamics="arpl")
    assert isinstance(env, PointControlEnv) and env.num_envs == 4
    torch.testing.assert_close(env.params.dynamics.mass, torch.full((4,), 0.782))


def test_policy_and_teacher_layouts():
    env = make(num_envs=32, dynamics="randomized", seed=3)
    obs = env.get_observations()
    s, p = env.state, env.params
    policy, teacher = obs["policy"], obs["teacher"]
    torch.testing.assert_close(policy[:, 0:3], s.position)
    rotation = sim.quaternion_to_rotation_matrix(s.orientation)
    torch.testing.assert_close(policy[:, 3:12], rotation.reshape(32, 9))
    torch.testing.assert_close(policy[:, 12:15], s.linear_velocity)
    torch.testing.assert_close(policy[:, 15:18], s.angular_velocity)
    limit = p.dynamics.action_limit
    normalized_rpm = (s.rpm - limit.min[:, None]) / (limit.max - limit.min)[:, None] * 2 - 1
    torch.testing.assert_close(policy[:, 18:22], normalized_rpm)  # at reset: the initial rotor speeds (l2f)
    torch.testing.assert_close(teacher[:, :22], policy)  # no observation noise by default
    torch.testing.assert_close(teacher[:, 22:26], normalized_rpm)
    dyn = teacher[:, 26:]
    torch.testing.assert_close(dyn[:, 0], p.dynamics.mass.log())
    torch.testing.assert_close(dyn[:, 1], sim.thrust_to_weight_ratio(p))
    weight = p.dynamics.mass * 9.81
    torch.testing.assert_close(dyn[:, 42:45], s.force / weight[:, None])
    # after a step the action history holds the (unclamped) action, most recent first
    action = torch.full((32, 4), 0.25)
    action[:, 0] = 1.5
    obs, *_ = env.step(action)
    alive = env.episode_length_buf == 1
    torch.testing.assert_close(obs["policy"][alive, 18:22], action[alive])


def test_longer_action_history():
    env = make(num_envs=4, dynamics="crazyflie", action_history_length=3)
    assert env.num_obs == 30 and env.num_teacher_obs == 30 + 52
    a1, a2 = torch.full((4, 4), 0.1), torch.full((4, 4), -0.2)
    env.step(a1)
    obs, *_ = env.step(a2)
    history = obs["policy"][:, 18:].reshape(4, 3, 4)
    torch.testing.assert_close(history[:, 0], a2)
    torch.testing.assert_close(history[:, 1], a1)


def test_observation_noise_has_the_configured_std():
    noise = ObservationNoiseCfg(position=0.1, orientation=0.02, linear_velocity=0.05, angular_velocity=0.3)
    env = make(num_envs=4000, dynamics="crazyflie", observation_noise=noise)
    obs = env.get_observations()
    difference = obs["policy"][:, :18] - obs["teacher"][:, :18]
    expected = torch.tensor([0.1] * 3 + [0.02] * 9 + [0.05] * 3 + [0.3] * 3)
    # sample std of 4000 normals: relative standard error 1.1 %, 5 sigma = 6 %
    torch.testing.assert_close(difference.std(0), expected, rtol=0.06, atol=0)
    assert torch.equal(obs["policy"][:, 18:], obs["teacher"][:, 18:22])


def test_time_outs_and_auto_reset():
    env = make(num_envs=6, dynamics="crazyflie", max_episode_length=5, termination=TerminationCfg(enabled=False))
    for k in range(5):
        position_before = env.state.position.clone()
        obs, rewards, dones, extras = env.step(torch.zeros(6, 4))
        if k < 4:
            assert not dones.any() and (env.episode_length_buf == k + 1).all()
    assert dones.all() and extras["time_outs"].all() and not extras["terminated"].any()
    assert (env.episode_length_buf == 0).all()
    # the returned observation belongs to the new episode
    torch.testing.assert_close(obs["policy"][:, :3], env.state.position)
    assert not torch.equal(env.state.position, position_before)
    assert "/episode/length" in extras["log"] and extras["log"]["/episode/length"].item() == 5


def test_step_leaves_the_callers_actions_alone():
    """Episodes that end are reset inside `step`; the actions tensor the caller passed (and may have recorded)
    keeps its values."""
    env = make(num_envs=6, dynamics="crazyflie", max_episode_length=3)
    for _ in range(3):
        actions = torch.full((6, 4), 0.25)
        _, _, dones, _ = env.step(actions)
    assert dones.all()
    assert bool((actions == 0.25).all())


def test_termination_reward_and_extras():
    env = make(num_envs=4, dynamics="crazyflie")
    env.state.position[1] = torch.tensor([0.0, 0.0, 1.5])  # beyond the 1 m position threshold
    env.state.linear_velocity[2] = torch.tensor([0.0, 3.0, 0.0])  # beyond 2 m/s
    obs, rewards, dones, extras = env.step(torch.zeros(4, 4))
    assert extras["terminated"].tolist() == [False, True, True, False]
    assert not extras["time_outs"].any() and dones.tolist() == [0, 1, 1, 0]
    assert rewards[1].item() == rewards[2].item() == -100.0
    assert extras["position_error"][1].item() == pytest.approx(1.5, abs=0.05)
    terms = extras["termination_terms"]
    assert terms["position"].tolist() == [False, True, False, False]
    assert terms["linear_velocity_xy"].tolist() == [False, False, True, False]
    assert not terms["linear_velocity_z"].any() and not terms["angular_velocity"].any()
    assert not terms["non_finite"].any()
    log = extras["log"]
    assert log["/episode/termination/position"].item() == log["/episode/termination/linear_velocity_xy"].item() == 0.5


def test_reward_is_l2f_squared_with_raptor_weights():
    env = make(num_envs=3, dynamics="crazyflie")
    s = env.state.clone()
    action = torch.tensor([[0.1, -0.2, 0.3, 0.0], [0.5, 0.5, 0.5, 0.5], [-1.0, 1.0, 0.0, 0.2]])
    previous = env.last_action.clone()  # zeros at reset (l2f StateLastAction)
    _, rewards, dones, _ = env.step(action)
    assert not dones.any()
    position_cost = s.position.norm(dim=-1)
    orientation_cost = 2 * torch.acos(1 - s.orientation[:, 3].abs())
    d_action_cost = (action - previous).norm(dim=-1)
    expected = 1.5 - (1.0 * position_cost + 0.1 * orientation_cost + 1.0 * d_action_cost)
    torch.testing.assert_close(rewards, expected)


def test_per_episode_randomization_and_fixed_params():
    env = make(num_envs=4, dynamics="randomized", max_episode_length=3, termination=TerminationCfg(enabled=False))
    mass_before = env.params.dynamics.mass.clone()
    for _ in range(2):
        env.step(torch.zeros(4, 4))
    assert torch.equal(env.params.dynamics.mass, mass_before)  # fixed within an episode
    env.step(torch.zeros(4, 4))
    assert (env.params.dynamics.mass != mass_before).all()  # redrawn for the next episode
    batch = sim.Params.stack([sim.model_params("x500"), sim.model_params("soft")])
    env = make(num_envs=2, dynamics=batch)
    torch.testing.assert_close(env.params.dynamics.mass, torch.tensor([2.0, 0.97]))
    with pytest.raises(ValueError, match="batch size 1 or num_envs"):
        make(num_envs=3, dynamics=batch)
    with pytest.raises(ValueError, match="dynamics must be"):
        make(dynamics="hexacopter")


def test_every_new_episode_starts_from_its_own_draw():
    """Randomised dynamics restart finished rows from the env's pool of pre-drawn starts: each episode gets its own
    parameters and initial state (no entry reused, none shared between rows), counters and history reset."""
    env = make(num_envs=16, dynamics="randomized", seed=3)
    g = torch.Generator().manual_seed(0)
    masses = set(env.params.dynamics.mass.tolist())
    started = 0
    for _ in range(120):
        obs, _, dones, _ = env.step(torch.rand(16, 4, generator=g) * 2 - 1)  # random actions: frequent crashes
        ids = dones.nonzero()[:, 0]
        if ids.numel() == 0:
            continue
        new = env.params.dynamics.mass[ids].tolist()
        assert len(set(new)) == len(new) and not set(new) & masses
        masses |= set(new)
        started += len(new)
        assert (env.episode_length_buf[ids] == 0).all() and (env.episode_return[ids] == 0).all()
        assert (env.last_action[ids] == 0).all()
        rotor_speeds = obs["teacher"][ids, 22:26]
        torch.testing.assert_close(env.action_history[ids, 0], rotor_speeds)  # history = the start's rotor speeds
        torch.testing.assert_close(obs["policy"][ids, :3], env.state.position[ids])
    assert started > 16


def test_refills_use_every_drawn_start_once_in_order(monkeypatch):
    """Randomised starts come from a reservoir drawn in batches: a take that needs more than is left gets the old
    reservoir's last starts, then the new one's first. No drawn start is skipped or used twice (`StartSource.take`)."""
    drawn = []
    draw = starts_module.StartSource.draw

    def recorded(self, params, P=None):
        starts = draw(self, params, P)
        drawn.append(starts.data.clone())
        return starts

    monkeypatch.setattr(starts_module, "RESERVOIR", 24)  # max(4 num_envs, 24): a refill every few takes
    monkeypatch.setattr(starts_module.StartSource, "draw", recorded)
    env = make(num_envs=4, dynamics="randomized", seed=3)  # takes 4 + 4 starts (the episodes, the next ones)
    counts = (3, 4, 4, 3, 4, 4, 4, 2, 4, 4, 4, 4, 1, 4)  # the 5th take straddles the first refill (2 left + 2 new)
    taken = torch.cat([env._starts.take(k, None).data for k in counts], 1)
    assert len(drawn) == 3  # 8 + 53 starts from reservoirs of 24
    assert torch.equal(taken, torch.cat(drawn, 1)[:, 8:8 + sum(counts)])


def test_observations_handed_out_are_never_written_into():
    """The teacher observation's feature entries are the env's dynamics features (it reads them back next step), yet
    a reset or a loaded state writes into no observation handed out before."""
    env = make(num_envs=8, dynamics="randomized", seed=1)
    g = torch.Generator().manual_seed(0)
    for _ in range(40):
        obs, *_ = env.step(torch.rand(8, 4, generator=g) * 2 - 1)
    assert torch.equal(env.dynamics_features, obs["teacher"][:, 26:])
    held, saved = obs["teacher"].clone(), env.state_dict()
    env.reset()
    env.load_state_dict(saved)
    env.reset(seed=2)
    assert torch.equal(obs["teacher"], held)


def test_seed_determinism_and_float64():
    a, b = make(seed=7), make(seed=7)
    assert torch.equal(a.get_observations()["teacher"], b.get_observations()["teacher"])
    env = make(num_envs=4, dtype="float64", dynamics="mrs")
    obs, rewards, *_ = env.step(torch.zeros(4, 4, dtype=torch.float64))
    assert obs["policy"].dtype == torch.float64 and rewards.dtype == torch.float64


def test_evaluate_resets_recurrent_state_where_episodes_start():
    env = make(num_envs=4, dynamics="randomized", max_episode_length=10)
    masks, dones_seen = [], []
    step = env.step

    def recording_step(actions):
        out = step(actions)
        dones_seen.append(out[2].bool().clone())
        return out

    env.step = recording_step

    def policy_fn(obs, reset_mask):
        masks.append(reset_mask.clone())
        return torch.rand(env.num_envs, 4) * 2 - 1

    result = evaluate(policy_fn, env, num_episodes=6)
    assert masks[0].all()
    for k in range(1, len(masks)):  # a reset is flagged exactly where the previous step ended an episode
        assert torch.equal(masks[k], dones_seen[k - 1])
    assert result.episodes == 6 and result.lengths.max() <= 10
    assert set(result.summary()) == {"episodes", "return_mean", "return_std", "episode_length_mean",
                                     "episode_length_std", "share_terminated", "share_terminated_ci95",
                                     "position_error_mean", "position_error_ci95", "final_position_error_mean",
                                     "rms_error_mean", "rms_error_ci95", "settling_steps_mean"}


def test_rollout_without_position_errors_flies_the_same_episodes():
    """``position_errors=False`` (what collection asks for) leaves the position statistics NaN and nothing else."""
    runs = []
    for position_errors in (True, False):
        env = make(num_envs=6, dynamics="randomized", max_episode_length=40, seed=3)
        actions = torch.Generator().manual_seed(0)
        runs.append(rollout(env, lambda obs, mask: torch.rand(6, 4, generator=actions) * 0.4 - 0.2, num_episodes=12,
                            seed=3, position_errors=position_errors))
    full, lean = runs
    for key in ("returns", "lengths", "terminated"):
        assert torch.equal(getattr(full, key), getattr(lean, key))
    assert full.position_error.isfinite().all() and full.rms_error.isfinite().all()
    for key in ("position_error", "final_position_error", "rms_error", "settling_steps"):
        assert getattr(lean, key).isnan().all()


def test_raptor_policy_hovers_the_crazyflie():
    """End-to-end smoke test with the released checkpoint (foundation-policy package)."""
    import eyas

    policy = eyas.load_rltools_h5(eyas.raptor_checkpoint_path())
    env = make(num_envs=8, dynamics="crazyflie", seed=1, max_episode_length=300)
    from eyas.envs import student_policy_fn

    result = evaluate(student_policy_fn(policy), env, num_episodes=8)
    # RAPTOR holds the Crazyflie within centimetres (benchmarks/raptor_flight.py: ~4 % terminated, ~5 cm over
    # 100 episodes); here 8 short episodes: at most 2 terminations, tail error below 15 cm
    assert result.share_terminated <= 0.25
    assert result.position_error_mean < 0.15
    assert not math.isnan(result.return_mean)


def test_policy_observation_matches_env():
    env = make(num_envs=5, dynamics="fs")
    obs = env.get_observations()
    torch.testing.assert_close(obs["teacher"][:, :22], policy_observation(env.state, env.action_history))


def test_rsl_rl_ppo_runs_on_the_env():
    from rsl_rl.runners import OnPolicyRunner

    env = make(num_envs=16, dynamics="randomized")
    cfg = {
        "algorithm": {"class_name": "PPO", "num_learning_epochs": 1, "num_mini_batches": 2},
        "actor": {"class_name": "MLPModel", "hidden_dims": [16],
                  "distribution_cfg": {"class_name": "GaussianDistribution", "init_std": 0.5}},
        "critic": {"class_name": "MLPModel", "hidden_dims": [16]},
        "obs_groups": {"actor": ["policy"], "critic": ["teacher"]},
        "num_steps_per_env": 8,
        "save_interval": 100,
    }
    runner = OnPolicyRunner(env, cfg, log_dir=None, device="cpu")
    before = [p.detach().clone() for p in runner.alg.actor.parameters()]
    runner.learn(2)
    after = list(runner.alg.actor.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after))  # PPO updated the actor from env data
