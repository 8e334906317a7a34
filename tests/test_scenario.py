"""The scenario mechanisms of the env step (`eyas.envs.scenario`): actuation delay (whole and fractional steps, against
l2f), PX4's Lissajous reference, wind, gusts, a weak motor, PX4's observation clipping, the privileged rows."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from eyas import sim
from eyas.envs import PointControlEnv, PointControlEnvCfg, TerminationCfg
from eyas.envs.scenario import MIXED, TASK, ScenarioCfg, hovering_tasks, reference_rows, sample_tasks
from eyas.envs.step import EnvState, Settings, advance
from eyas.sim import Params, State, fused

from test_sim_fidelity import case_params, pack, step_tolerance, unpack

pytestmark = pytest.mark.usefixtures("single_thread")
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "l2f"


def env(n=16, dynamics="crazyflie", **scenario) -> PointControlEnv:
    return PointControlEnv(PointControlEnvCfg(num_envs=n, dynamics=dynamics, dtype="float64", seed=3, compile=False,
                                              termination=TerminationCfg(enabled=False),
                                              scenario=ScenarioCfg(**scenario)))


def test_a_delay_of_whole_steps_delivers_each_command_that_many_steps_late():
    delayed, prompt = env(delay_ms=(20.0, 20.0)), env()
    assert delayed.settings.delay_slots == 3 and torch.all(delayed.task[:, TASK.DELAY] == 2)
    torch.testing.assert_close(delayed.state.position, prompt.state.position, rtol=0, atol=0)  # same first draws
    fill = delayed.action_history[:, 0].clone()  # the initial rotor speeds: what the rotors hold until then
    actions = 0.3 * torch.randn(30, 16, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    late = torch.cat([fill[None], fill[None], actions[:-2]])
    for t in range(30):
        delayed.step(actions[t])
        prompt.step(late[t])
        torch.testing.assert_close(delayed.state.position, prompt.state.position, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(delayed.state.rpm, prompt.state.rpm, rtol=1e-12, atol=1e-12)
    # the policy still observes the command it issued last, not the delayed one
    torch.testing.assert_close(delayed.get_observations()["policy"][:, 18:22], actions[-1])


def test_a_fractional_delay_is_l2f_integrating_the_old_command_for_that_fraction():
    """l2f's own integrator (fixtures/l2f/delay.py): ``f dt`` with the old command, then ``(1 - f) dt`` with the new
    one. eyas computes in float64, so the difference is l2f's float32 round-off: within the fidelity tests' bound
    for each of the two sub-steps (`step_tolerance`), summed."""
    fx, cases = dict(np.load(FIXTURES / "delay.npz")), dict(np.load(FIXTURES / "l2f_fixtures.npz"))
    worst = 0.0
    for c in np.unique(fx["case"]):
        rows = fx["case"] == c
        n = int(rows.sum())
        params = case_params(cases, int(c), torch.float64).expand(n)
        x, middle, expected = (torch.as_tensor(fx[k][rows], dtype=torch.float64)
                               for k in ("state", "middle", "next_state"))
        old, new = (torch.as_tensor(fx[k][rows], dtype=torch.float64) for k in ("old_action", "new_action"))
        fraction = torch.as_tensor(fx["fraction"][rows], dtype=torch.float64)
        force, torque = cases["force"][c], cases["torque"][c]
        T = hovering_tasks(n, torch.float64, "cpu")
        T[TASK.DELAY] = fraction
        s = EnvState(fused.pack_state(unpack(x, force, torque)), fused.PARAMS.pack(params, torch.float64), T,
                     torch.zeros(48, n, dtype=torch.float64), old.T.clone(), old.T.clone(),
                     torch.zeros(4, n, dtype=torch.float64), torch.zeros(n, dtype=torch.long),
                     torch.zeros(n, dtype=torch.float64))
        nxt, _ = advance(s, new, Settings(delay_slots=1))
        got = pack(fused.unpack_state(nxt.X))
        first, rest = (_with_dt(params, share) for share in (fraction, 1 - fraction))
        tolerance = (step_tolerance(x, middle, old, first, force, torque)
                     + step_tolerance(middle, expected, new, rest, force, torque))
        assert torch.all((got - expected).abs() <= tolerance), (str(cases["name"][c]), (got - expected).abs().max())
        worst = max(worst, float(((got - expected).abs() / tolerance).max()))
    assert worst > 0  # the comparison saw l2f's float32 round-off


def _with_dt(params: Params, share: torch.Tensor) -> Params:
    out = params.map(lambda t: t.clone())
    out.integration.dt = params.integration.dt * share
    return out


def px4_lissajous(t, A, B, C, a, b, c, duration, ramp):
    """PX4 mc_raptor's `lissajous` setpoint (trajectories/lissajous.hpp), written out as its formula states."""
    time_velocity = min(t, ramp) / ramp if ramp > 0 else 1.0
    progress = (time_velocity * min(t, ramp) / 2 + max(0.0, t - ramp)) * 2 * math.pi / duration
    d_progress = 2 * math.pi * time_velocity / duration
    position = (A * math.sin(a * progress), B * math.sin(b * progress), C * math.sin(c * progress))
    velocity = (A * math.cos(a * progress) * a * d_progress, B * math.cos(b * progress) * b * d_progress,
                C * math.cos(c * progress) * c * d_progress)
    return position, velocity


@pytest.mark.parametrize("shape", [(0.5, 1.0, 0.0, 2.0, 1.0, 1.0, 10.0, 3.0), (0.7, 0.3, 0.4, 1.0, 3.0, 2.0, 5.0, 0.0)])
def test_the_reference_is_px4s_lissajous(shape):
    steps = torch.arange(0, 1400, 7)
    n = len(steps)
    T = hovering_tasks(n, torch.float64, "cpu")
    T[TASK.AMPLITUDE] = torch.tensor(shape[:3], dtype=torch.float64)[:, None]
    T[TASK.FREQUENCY] = torch.tensor(shape[3:6], dtype=torch.float64)[:, None]
    T[TASK.DURATION], T[TASK.RAMP] = shape[6], shape[7]
    P = fused.PARAMS.pack(sim.model_params("crazyflie", torch.float64).expand(n))
    p, v, a = (torch.stack(r, -1) for r in reference_rows(T, steps, P))
    expected = [px4_lissajous(0.01 * int(k), *shape) for k in steps]
    torch.testing.assert_close(p, torch.tensor([e[0] for e in expected], dtype=torch.float64), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(v, torch.tensor([e[1] for e in expected], dtype=torch.float64), rtol=1e-12, atol=1e-12)
    # the acceleration is the velocity's derivative (central differences of 1 ms, away from the ramp's kink)
    h = 0.1
    later, earlier = (torch.stack(reference_rows(T, steps.double() + d, P)[1], -1) for d in (h, -h))
    smooth = (steps * 0.01 - shape[7]).abs() > 0.002
    torch.testing.assert_close(a[smooth], ((later - earlier) / (2 * h * 0.01))[smooth], rtol=1e-4, atol=1e-4)


def test_heading_turns_the_figure_about_z():
    n = 3
    T = hovering_tasks(n, torch.float64, "cpu")
    T[TASK.AMPLITUDE] = torch.tensor([0.5, 1.0, 0.2])[:, None]
    T[TASK.FREQUENCY] = torch.tensor([2.0, 1.0, 1.0])[:, None]
    T[TASK.DURATION], T[TASK.HEADING] = 10.0, torch.tensor([0.0, math.pi / 2, math.pi])
    P = fused.PARAMS.pack(sim.model_params("crazyflie", torch.float64).expand(n))
    p = torch.stack(reference_rows(T, torch.full((n,), 420), P)[0], -1)
    torch.testing.assert_close(p[1], torch.stack([-p[0, 1], p[0, 0], p[0, 2]]))
    torch.testing.assert_close(p[2], torch.stack([-p[0, 0], -p[0, 1], p[0, 2]]))


def test_the_policy_observes_position_and_velocity_relative_to_the_reference():
    e = env(reference_share=1.0, reference_duration=(5.0, 5.0), reference_ramp=1.0)
    for _ in range(150):
        obs, *_ = e.step(torch.zeros(16, 4, dtype=torch.float64))
    p_ref, v_ref = e.reference()
    assert p_ref.abs().max() > 0.1 and v_ref.abs().max() > 0.1
    torch.testing.assert_close(obs["policy"][:, 0:3], e.state.position - p_ref)
    torch.testing.assert_close(obs["policy"][:, 12:15], e.state.linear_velocity - v_ref)
    torch.testing.assert_close(e.relative_position, e.state.position - p_ref)


def test_px4_clipping_of_the_observed_errors():
    e = env(reference_share=1.0, observation_clip=True)
    for _ in range(100):
        obs, *_ = e.step(torch.ones(16, 4, dtype=torch.float64))  # full thrust: far above the reference
    p_ref, v_ref = e.reference()
    torch.testing.assert_close(obs["policy"][:, 0:3], (e.state.position - p_ref).clamp(-0.5, 0.5))
    torch.testing.assert_close(obs["policy"][:, 12:15], (e.state.linear_velocity - v_ref).clamp(-1, 1))
    assert (e.state.position - p_ref).abs().max() > 1 and obs["policy"][:, 0:3].abs().max() == 0.5


def test_wind_is_l2fs_random_force_of_the_drawn_size():
    e = env(wind=(0.15, 0.15))
    params = e.params
    weight = params.dynamics.mass * 9.81
    force = e.state.force
    torch.testing.assert_close(force.norm(dim=-1), 0.15 * weight)  # the Crazyflie draws no random force itself
    assert force[:, 2].abs().max() < 1e-12 and force[:, 0].std() > 0  # horizontal, in random directions
    before = State(*(t.clone() for t in e.state.__dict__.values()))
    actions = 0.1 * torch.ones(16, 4, dtype=torch.float64)
    e.step(actions)
    expected = sim.step(before, actions, params)  # l2f's step with the force in its state (StateRandomForce)
    torch.testing.assert_close(e.state.linear_velocity, expected.linear_velocity, rtol=1e-12, atol=1e-12)


def test_a_weak_motor_scales_only_its_rotor():
    e = env(weak_motor_share=1.0, weak_motor_rotor=2, weak_motor_scale=(0.8, 0.8))
    torch.testing.assert_close(e.task[:, TASK.MOTOR_SCALE], torch.tensor([1.0, 1.0, 0.8, 1.0]).expand(16, 4).double())
    params, before = e.params, State(*(t.clone() for t in e.state.__dict__.values()))
    weak = params.map(lambda t: t.clone())
    weak.dynamics.rotor_thrust_coefficients[:, 2] *= 0.8
    features = e.dynamics_features
    actions = 0.4 * torch.ones(16, 4, dtype=torch.float64)
    e.step(actions)
    expected = sim.step(before, actions, weak)
    torch.testing.assert_close(e.state.angular_velocity, expected.angular_velocity, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(e.state.linear_velocity, expected.linear_velocity, rtol=1e-12, atol=1e-12)
    # the teacher sees the weak rotor's thrust curve (features 6:18: c_ij rotor-major), the others unchanged
    strong = PointControlEnv(PointControlEnvCfg(num_envs=16, dynamics="crazyflie", dtype="float64", seed=3,
                                                compile=False)).dynamics_features
    torch.testing.assert_close(features[:, 12:15], 0.8 * strong[:, 12:15])
    torch.testing.assert_close(features[:, 6:12], strong[:, 6:12])


def test_a_gust_steps_the_force_at_its_time_and_the_teacher_sees_it():
    e = env(gust_share=1.0, gust=(0.2, 0.2), gust_time=(0.05, 0.05))
    weight = e.params.dynamics.mass * 9.81
    start, first = e.state.force.clone(), e.get_observations()["teacher"][:, 68:71].clone()
    for t in range(8):
        e.step(torch.zeros(16, 4, dtype=torch.float64))
        gust = e.state.force - start
        if t < 5:
            assert gust.abs().max() == 0, t
        else:
            torch.testing.assert_close(gust.norm(dim=-1), 0.2 * weight)
    teacher = e.get_observations()["teacher"]
    torch.testing.assert_close(teacher[:, 68:71], first + gust / weight[:, None])


def test_privileged_rows():
    e = PointControlEnv(PointControlEnvCfg(num_envs=8, dynamics="crazyflie", seed=1, compile=False, privileged=True,
                                           scenario=ScenarioCfg(delay_ms=(0.0, 25.0), weak_motor_share=1.0)))
    assert e.num_privileged_obs == 90
    a1, a2, a3 = (torch.full((8, 4), v) for v in (0.1, 0.2, 0.3))
    for a in (a1, a2, a3):
        obs, *_ = e.step(a)
    privileged = obs["privileged"]
    assert torch.equal(privileged[:, :74], obs["teacher"])
    torch.testing.assert_close(privileged[:, 77:81], e.task[:, TASK.MOTOR_SCALE])
    torch.testing.assert_close(privileged[:, 81], e.task[:, TASK.DELAY])
    torch.testing.assert_close(privileged[:, 82:86], a2)
    torch.testing.assert_close(privileged[:, 86:90], a1)


def test_an_inactive_scenario_draws_nothing():
    """Off, the scenario takes no draws: the episodes are RAPTOR's MDP's, drawn as before it existed."""
    plain = PointControlEnv(PointControlEnvCfg(num_envs=8, seed=2, compile=False))
    g = torch.Generator().manual_seed(2)
    nominal = sim.model_params("crazyflie", torch.float64)
    sim.sample_domain_randomized_params(8, g, nominal=nominal)  # the rows' placeholder parameters
    params = sim.sample_domain_randomized_params(16384, g, nominal=nominal, dtype=torch.float32)  # the reservoir's
    assert torch.equal(plain.params.dynamics.mass, params.dynamics.mass[:8])
    assert torch.equal(plain.task, hovering_tasks(8, torch.float32, "cpu").T)
    assert not ScenarioCfg().active and ScenarioCfg(wind=(0.0, 0.1)).active


def test_nominal_episodes_draw_raptors_mdp_and_leave_the_others_draws_alone():
    """``nominal_share``: those episodes hover at the origin undisturbed (no reference, delay, wind, gust or weak
    motor); the other episodes are exactly what the same configuration without it draws."""
    params = sim.sample_domain_randomized_params(512, torch.Generator().manual_seed(0), dtype=torch.float64)
    mixed, mixed_wind = sample_tasks(MIXED, params, torch.Generator().manual_seed(1))
    plain, plain_wind = sample_tasks(dataclasses.replace(MIXED, nominal_share=0.0), params,
                                     torch.Generator().manual_seed(1))
    nominal = (mixed != plain).any(0) | (mixed_wind != plain_wind).any(1)
    hovering = hovering_tasks(512, torch.float64, "cpu")
    assert 0.4 < nominal.double().mean() < 0.6  # about half; every one of them differs from its plain draw
    assert torch.equal(mixed[:, nominal], hovering[:, nominal]) and not mixed_wind[nominal].any()
    assert torch.equal(mixed[:, ~nominal], plain[:, ~nominal]) and torch.equal(mixed_wind[~nominal], plain_wind[~nominal])


@pytest.mark.parametrize("bad", [dict(reference_share=1.5), dict(nominal_share=-0.1), dict(delay_ms=(10.0, 5.0)), dict(weak_motor_rotor=4),
                                 dict(wind=(-0.1, 0.1))])
def test_bad_scenarios_are_refused(bad):
    with pytest.raises(ValueError, match="scenario"):
        ScenarioCfg(**bad).validate()
