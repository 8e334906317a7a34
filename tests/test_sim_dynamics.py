"""Physics checks of eyas.sim against closed-form solutions (independent of l2f), and the Params API."""
from __future__ import annotations

import math

import pytest
import torch

from eyas import sim
from eyas.sim import Params, State



pytestmark = pytest.mark.usefixtures("single_thread")  # fixture in tests/conftest.py


def rotors_off(params: Params) -> Params:
    p = params.clone()
    p.dynamics.rotor_thrust_coefficients.zero_()
    return p


def test_free_fall_is_exact():
    """No thrust: constant acceleration g, which RK4 integrates exactly (p = g t^2 / 2, v = g t)."""
    p = rotors_off(sim.model_params("x500", dtype=torch.float64))
    s = State.hover(p)
    s.rpm.zero_()
    for _ in range(100):
        s = sim.step(s, -torch.ones(1, 4, dtype=torch.float64), p)
    t = 1.0
    torch.testing.assert_close(s.linear_velocity, torch.tensor([[0.0, 0.0, -9.81 * t]], dtype=torch.float64),
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(s.position, torch.tensor([[0.0, 0.0, -9.81 * t * t / 2]], dtype=torch.float64),
                               rtol=0, atol=1e-12)


def test_torque_free_spin_about_a_principal_axis():
    """Constant body rate about z (a principal axis): q(t) = (cos(w t / 2), 0, 0, sin(w t / 2)).
    RK4's local error is O((w dt)^5) per step; 100 steps at w dt = 0.03: < 1e-9."""
    p = rotors_off(sim.model_params("crazyflie", dtype=torch.float64))
    s = State.hover(p)
    s.rpm.zero_()
    omega = 3.0
    s.angular_velocity[:] = torch.tensor([0.0, 0.0, omega], dtype=torch.float64)
    for _ in range(100):
        s = sim.step(s, -torch.ones(1, 4, dtype=torch.float64), p)
    expected = torch.tensor([[math.cos(omega / 2), 0.0, 0.0, math.sin(omega / 2)]], dtype=torch.float64)
    torch.testing.assert_close(s.orientation, expected, rtol=0, atol=1e-9)


def test_motor_lag_rising_and_falling():
    """rpm' = (setpoint - rpm) / T: after one step rpm = setpoint + (rpm0 - setpoint) exp(-dt / T)
    up to RK4's error (dt / T)^5 / 120 < 2e-6 for the Crazyflie's T_rise = 0.055 s."""
    p = sim.model_params("crazyflie", dtype=torch.float64)
    d = p.dynamics
    s = State.hover(p)
    s.rpm[:] = 0.5
    up = sim.step(s, torch.ones(1, 4, dtype=torch.float64), p)
    down = sim.step(s, -torch.ones(1, 4, dtype=torch.float64), p)
    rise, fall = d.rotor_time_constants_rising[0, 0].item(), d.rotor_time_constants_falling[0, 0].item()
    torch.testing.assert_close(up.rpm, torch.full((1, 4), 1 - 0.5 * math.exp(-0.01 / rise), dtype=torch.float64),
                               rtol=0, atol=(0.01 / rise) ** 5 / 120)
    torch.testing.assert_close(down.rpm, torch.full((1, 4), 0.5 * math.exp(-0.01 / fall), dtype=torch.float64),
                               rtol=0, atol=(0.01 / fall) ** 5 / 120)


def test_differential_thrust_rolls_the_right_way():
    """FLU body axes, motors FR, BR, BL, FL: more thrust on the right (-y) rotors lifts the right side,
    a rotation about -x (negative roll rate); front/back symmetric, so no pitch rate."""
    p = sim.model_params("crazyflie")
    s = State.hover(p)
    action = torch.tensor([[0.5, 0.5, 0.0, 0.0]])  # front-right and back-right faster than the left pair
    out = sim.step(s, action, p)
    roll_rate, pitch_rate = out.angular_velocity[0, 0].item(), out.angular_velocity[0, 1].item()
    assert roll_rate < 0 and abs(pitch_rate) < 1e-3 * abs(roll_rate)


def test_quaternion_stays_normalised_and_state_devices_match():
    p = sim.sample_domain_randomized_params(16, torch.Generator().manual_seed(1))
    s = sim.sample_initial_state(p, torch.Generator().manual_seed(2))
    for _ in range(20):
        s = sim.step(s, torch.rand(16, 4, generator=torch.Generator().manual_seed(3)) * 2 - 1, p)
    torch.testing.assert_close(s.orientation.norm(dim=-1), torch.ones(16), rtol=0, atol=4e-7)
    with pytest.raises(ValueError, match="dtype"):
        sim.step(s, torch.zeros(16, 4), p.to(dtype=torch.float64))


def test_params_batch_api():
    names = sim.MODEL_NAMES
    batch = Params.stack([sim.model_params(n) for n in names])
    assert batch.batch_size == len(names)
    assert batch[1].to_l2f_json() == sim.model_params(names[1]).to_l2f_json()
    assert batch.to(dtype=torch.float64).dtype == torch.float64
    assert batch.to(dtype=torch.float64).mdp.init.relative_rpm.dtype == torch.bool
    with pytest.raises(ValueError, match="batch of one"):
        batch.to_l2f_json()
    # a dict is accepted too (teachers pass parsed JSON); missing sections take RAPTOR's defaults
    only_dynamics = Params.from_l2f_json({"dynamics": sim.raptor_dynamics("mrs")})
    assert only_dynamics.to_l2f_json() == sim.model_params("mrs").to_l2f_json()
    with pytest.raises(KeyError, match="dynamics"):
        Params.from_l2f_json("{}")
    # one shared parameter set steps a whole batch
    s = State.hover(batch[0], batch_size=5)
    assert sim.step(s, torch.zeros(5, 4), batch[0]).position.shape == (5, 3)
