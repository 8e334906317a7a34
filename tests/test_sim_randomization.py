"""RAPTOR domain randomisation and l2f's initial-state distribution.

The sampler is compared with 1000 parameter sets drawn by l2f's own C++ `sample_initial_parameters`
(fixtures/l2f/domain_randomization.npz) through the variables l2f draws, recovered from each parameter set.
Two-sample Kolmogorov-Smirnov tests at significance 1e-3 (critical value 1.949 * sqrt((n + m) / (n m)));
the eyas samples use a fixed seed, so the tests are deterministic.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from eyas import sim

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "l2f"
NOMINAL = sim.l2f_dynamics("crazyflie")
G = 9.81
NUM_EYAS = 4000


pytestmark = pytest.mark.usefixtures("single_thread")  # fixture in tests/conftest.py


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, grid, side="right") / len(a)
    cdf_b = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.abs(cdf_a - cdf_b).max())


def ks_critical(n: int, m: int, c_alpha: float = 1.949) -> float:  # c(1e-3) = sqrt(-ln(1e-3 / 2) / 2)
    return c_alpha * math.sqrt((n + m) / (n * m))


def drawn_variables(mass, rotor_positions, thrust_coefficients, J, torque_constants, rising, falling, force_std):
    """The random variables of l2f's sampler, recovered from a parameter set (numpy, batch first)."""
    t2w = thrust_coefficients.sum(axis=(1, 2)) / (mass * G)  # action max = 1 for the nominal Crazyflie
    rotor_distance_factor = np.abs(rotor_positions[:, 0, 0]) / abs(NOMINAL["rotor_positions"][0][0])
    size_factor = rotor_distance_factor / np.cbrt(mass / NOMINAL["mass"])
    torque_to_inertia = rotor_distance_factor * abs(NOMINAL["rotor_positions"][0][0]) * 1.414213562373095 \
        * t2w * mass * G / 4 / J[:, 0, 0]
    disturbance_fraction = force_std * 3 / (t2w * mass) / (np.maximum(t2w - 1, 0) * 0.3)
    return {
        "mass": mass, "thrust_to_weight": t2w, "size_factor": size_factor, "torque_to_inertia": torque_to_inertia,
        "rotor_torque_constant": torque_constants[:, 0], "rising": rising[:, 0], "falling": falling[:, 0],
        "disturbance_fraction": disturbance_fraction,
    }


@pytest.fixture(scope="module")
def l2f_samples():
    d = np.load(FIXTURES / "domain_randomization.npz")
    return d, drawn_variables(d["mass"], d["rotor_positions"], d["rotor_thrust_coefficients"], d["J"],
                              d["rotor_torque_constants"], d["rotor_time_constants_rising"],
                              d["rotor_time_constants_falling"], d["random_force_std"])


@pytest.fixture(scope="module")
def eyas_params():
    return sim.sample_domain_randomized_params(NUM_EYAS, torch.Generator().manual_seed(0), dtype=torch.float64)


def eyas_variables(p: sim.Params) -> dict:
    d = p.dynamics
    return drawn_variables(d.mass.numpy(), d.rotor_positions.numpy(), d.rotor_thrust_coefficients.numpy(), d.J.numpy(),
                           d.rotor_torque_constants.numpy(), d.rotor_time_constants_rising.numpy(),
                           d.rotor_time_constants_falling.numpy(), p.disturbances.random_force.std.numpy())


@pytest.mark.parametrize("variable", ["mass", "thrust_to_weight", "size_factor", "torque_to_inertia",
                                      "rotor_torque_constant", "rising", "falling", "disturbance_fraction"])
def test_sampled_variables_follow_l2f(l2f_samples, eyas_params, variable):
    _, reference = l2f_samples
    ours = eyas_variables(eyas_params)
    a, b = reference[variable], ours[variable]
    keep_a, keep_b = np.isfinite(a), np.isfinite(b)  # disturbance fraction is undefined at t2w = 1
    statistic = ks_statistic(a[keep_a], b[keep_b])
    assert statistic < ks_critical(keep_a.sum(), keep_b.sum()), f"{variable}: KS statistic {statistic:.3f}"


def test_ks_test_detects_a_uniform_size_deviation(l2f_samples):
    """Power check: l2f draws the size deviation from Normal(mean=-0.1, std=0.1); the presumably intended
    U(-0.1, 0.1) would be rejected by the same test."""
    _, reference = l2f_samples
    f = np.random.default_rng(0).uniform(-0.1, 0.1, NUM_EYAS)
    uniform_size_factor = np.where(f < 0, 1 / (1 - f), 1 + f)
    assert ks_statistic(reference["size_factor"], uniform_size_factor) > ks_critical(1000, NUM_EYAS)


def test_deterministic_relations_of_a_sampled_set(eyas_params):
    p = eyas_params
    d = p.dynamics
    distance = torch.linalg.vector_norm(d.rotor_positions, dim=-1).amax(-1)
    torch.testing.assert_close(p.mdp.termination.position_threshold, 20 * distance)
    torch.testing.assert_close(p.mdp.init.max_position, 10 * distance)
    # only the diagonals of J and J_inv are scaled; they stay each other's inverse for the Crazyflie
    torch.testing.assert_close(torch.diagonal(d.J, dim1=-2, dim2=-1) * torch.diagonal(d.J_inv, dim1=-2, dim2=-1),
                               torch.ones(NUM_EYAS, 3, dtype=torch.float64), rtol=1e-6, atol=0)
    # thrust curve shape is kept (all coefficients scaled by one factor)
    ratio = d.rotor_thrust_coefficients / torch.tensor(NOMINAL["rotor_thrust_coefficients"], dtype=torch.float64)
    torch.testing.assert_close(ratio, ratio[:, :1, :1].expand_as(ratio))
    assert (d.mass >= 0.02).all() and (d.mass <= 5.0).all()
    t2w = sim.thrust_to_weight_ratio(p)
    assert (t2w >= 1.5).all() and (t2w <= 5.0).all()


def test_sampler_respects_generator_dtype_and_disabled_ranges():
    a = sim.sample_domain_randomized_params(8, torch.Generator().manual_seed(3))
    b = sim.sample_domain_randomized_params(8, torch.Generator().manual_seed(3))
    assert a.dtype == torch.float32
    for x, y in zip(a.leaves(), b.leaves()):
        assert torch.equal(x, y)
    only_mass = sim.DomainRandomizationRanges(thrust_to_weight=None, torque_to_inertia=None, mass_size_deviation=None,
                                              rotor_time_constant_rising=None, rotor_time_constant_falling=None,
                                              rotor_torque_constant=None, disturbance_force_max=None)
    p = sim.sample_domain_randomized_params(64, torch.Generator().manual_seed(0), only_mass, dtype=torch.float64)
    nominal = sim.model_params("crazyflie", dtype=torch.float64)
    torch.testing.assert_close(sim.thrust_to_weight_ratio(p), sim.thrust_to_weight_ratio(nominal).expand(64))
    assert torch.equal(p.dynamics.rotor_positions, nominal.dynamics.rotor_positions.expand(64, 4, 3))
    with pytest.raises(ValueError, match="thrust_to_weight"):
        sim.sample_domain_randomized_params(4, None, sim.DomainRandomizationRanges(thrust_to_weight=(1.0, 2.0)))


def test_initial_state_distribution():
    params = sim.model_params("crazyflie", dtype=torch.float64).expand(20000)
    params.disturbances.random_force.std.fill_(0.2)
    params.disturbances.random_torque.std.fill_(0.01)
    s = sim.sample_initial_state(params, torch.Generator().manual_seed(0))
    at_rest = (s.position == 0).all(-1)
    # 10 % guidance starts (binomial std 0.2 %: 5 sigma = 1 %)
    assert abs(at_rest.double().mean().item() - 0.1) < 0.01
    assert (s.orientation[at_rest] == torch.tensor([1.0, 0, 0, 0], dtype=torch.float64)).all()
    assert (s.linear_velocity[at_rest] == 0).all() and (s.angular_velocity[at_rest] == 0).all()
    moving = ~at_rest
    assert s.position.abs().max() <= 0.5 and s.position[moving].abs().max() > 0.49
    assert s.linear_velocity.abs().max() <= 1.0 and s.angular_velocity.abs().max() <= 1.0
    torch.testing.assert_close(s.orientation.norm(dim=-1), torch.ones(20000, dtype=torch.float64))
    # rotation angle ~ U(0, 1 rad) about a uniform axis (l2f ignores max_angle beyond enabling it)
    angle = 2 * torch.acos(s.orientation[moving, 0].clamp(max=1))
    assert angle.max() <= 1.0 + 1e-12 and angle.max() > 0.99
    assert abs(angle.mean().item() - 0.5) < 0.01  # U(0,1): std of the mean 0.002
    # rotor speeds ~ U(min, middle) of the action range [0, 1] (init_90_deg: min_rpm -1, max_rpm 0)
    assert s.rpm.min() >= 0 and s.rpm.max() <= 0.5 and abs(s.rpm.mean().item() - 0.25) < 0.005
    # disturbances: per-axis Normal(mean, std), torque z with std / 100
    torch.testing.assert_close(s.force.std(0), torch.full((3,), 0.2, dtype=torch.float64), rtol=0.03, atol=0)
    torch.testing.assert_close(s.torque.std(0), torch.tensor([0.01, 0.01, 0.0001], dtype=torch.float64),
                               rtol=0.03, atol=0)
