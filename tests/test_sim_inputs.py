"""Invalid inputs raise one clear ValueError; finite out-of-range actions are clamped like l2f."""
from __future__ import annotations

import json

import pytest
import torch

from eyas import sim
from eyas.envs import PointControlEnv, PointControlEnvCfg
from eyas.sim import Params, State


pytestmark = pytest.mark.usefixtures("single_thread")  # fixture in tests/conftest.py


@pytest.fixture
def params() -> Params:
    return sim.model_params("crazyflie").expand(2)


@pytest.fixture
def state(params) -> State:
    return State.hover(params)


def test_wrong_action_shape(state, params):
    for bad in (torch.zeros(2, 3), torch.zeros(4), torch.zeros(3, 4), torch.zeros(2, 4, 1)):
        with pytest.raises(ValueError, match=r"action must have shape \(2, 4\)"):
            sim.step(state, bad, params)
    env = PointControlEnv(PointControlEnvCfg(num_envs=2, dynamics="crazyflie"))
    with pytest.raises(ValueError, match=r"actions must have shape \(2, 4\)"):
        env.step(torch.zeros(2, 3))


@pytest.mark.parametrize("index, value, message", [((1, 2), float("nan"), "NaN"), ((0, 0), -float("inf"), "inf")])
def test_non_finite_action(state, params, index, value, message):
    action = torch.zeros(2, 4)
    action[index] = value
    with pytest.raises(ValueError, match=message):
        sim.step(state, action, params)
    env = PointControlEnv(PointControlEnvCfg(num_envs=2, dynamics="crazyflie"))
    with pytest.raises(ValueError, match=message):
        env.step(action)


def test_non_positive_mass(state, params):
    values = json.loads(sim.model_params("crazyflie").to_l2f_json())
    for mass in (0.0, -0.03):
        values["dynamics"]["mass"] = mass
        with pytest.raises(ValueError, match="mass must be positive"):
            Params.from_l2f_json(json.dumps(values))
    bad = params.clone()
    bad.dynamics.mass[1] = 0.0  # modified after construction: caught when stepping
    with pytest.raises(ValueError, match="mass must be positive"):
        sim.step(state, torch.zeros(2, 4), bad)


def test_singular_inertia(state, params):
    values = json.loads(sim.model_params("crazyflie").to_l2f_json())
    values["dynamics"]["J"][2] = [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="inertia J is singular"):
        Params.from_l2f_json(json.dumps(values))
    bad = params.clone()
    bad.dynamics.J[0] = torch.tensor([[1e-5, 1e-5, 0.0], [1e-5, 1e-5, 0.0], [0.0, 0.0, 2e-5]])  # rank 2
    with pytest.raises(ValueError, match="inertia J is singular"):
        sim.step(state, torch.zeros(2, 4), bad)


def test_out_of_range_finite_actions_are_clamped(state, params):
    """l2f clamps actions to [-1, 1] before mapping them to rotor-speed setpoints."""
    high = sim.step(state, torch.full((2, 4), 3.0), params)
    one = sim.step(state, torch.ones(2, 4), params)
    low = sim.step(state, torch.full((2, 4), -7.5), params)
    minus_one = sim.step(state, -torch.ones(2, 4), params)
    for a, b in ((high, one), (low, minus_one)):
        for x, y in zip(a.leaves(), b.leaves()):
            assert torch.equal(x, y)
