"""eyas.sim against the real l2f 2.0.18 simulator, through fixtures written by fixtures/l2f/generate.py.

Tolerances are forward round-off bounds, not fitted numbers. l2f computes in float32 (unit roundoff
u = 2^-24). A computation whose longest chain of dependent floating-point operations has length n, evaluated
with inputs and intermediates of magnitude at most S, is off by at most gamma_n * S, gamma_n = n u / (1 - n u)
(Higham, Accuracy and Stability of Numerical Algorithms, ch. 3). For one RK4 step, the chain is:
thrust curve (4) -> rotor thrust (1) -> lever-arm cross product (3) -> drag term and sum over 4 rotors (5)
-> J omega, omega x J omega, subtraction (7) -> J_inv product and disturbance term (4) = 24 per derivative
evaluation, + 2 to form the next stage input, times 4 stages, + 8 for the RK4 combination and 6 for the
quaternion normalisation: n = 4 * 26 + 14 = 118. S is the componentwise "absolute" evaluation of the same
step (every term replaced by its magnitude, see `roundoff_scale`). Two independent float32 implementations
(eyas and l2f, whose -Ofast build may fuse and reorder operations) then differ by at most 2 gamma_n S.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from eyas import sim
from eyas.compilation import compiled_function
from eyas.envs import policy_observation
from eyas.sim import Params, State, fused

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "l2f"
U32 = 2.0 ** -24  # float32 unit roundoff
N_STEP_CHAIN = 4 * 26 + 14  # longest operation chain of one step (module docstring)


pytestmark = pytest.mark.usefixtures("single_thread")  # fixture in tests/conftest.py


def fused_step(state, action, params, validate=True):
    """The fused form the env and APG step (`eyas.sim.fused`: packed rows, one (B,) tensor per quantity), eager."""
    sim.check_inputs(state, action, params, validate)
    X = fused.pack_state(state)
    return fused.unpack_state(fused.step_packed(X, action, fused.PARAMS.pack(params, X.dtype)))


def compiled_fused_step(state, action, params, validate=True):
    """The fused form compiled by inductor as the env compiles it (`eyas.compilation.compiled_function`): fused
    and reordered arithmetic is one more float32 implementation, so the same two-implementation bound applies."""
    sim.check_inputs(state, action, params, validate)
    X = fused.pack_state(state)
    step = compiled_function(fused.step_packed)
    return fused.unpack_state(step(X, action, fused.PARAMS.pack(params, X.dtype)))


# the reference port, and the fused form the env and APG fly (eager; compiled: single steps, where the compile is
# one graph per dtype, and in tests/test_compiled_env.py, which flies the compiled env against the eager one)
STEPS = pytest.mark.parametrize("step", [sim.step, fused_step], ids=["reference", "fused"])
SINGLE_STEPS = pytest.mark.parametrize("step", [
    sim.step, fused_step, pytest.param(compiled_fused_step, marks=pytest.mark.compiled)],
    ids=["reference", "fused", "fused-compiled"])


def gamma(n: int, u: float = U32) -> float:
    return n * u / (1 - n * u)


@pytest.fixture(scope="module")
def fx():
    return dict(np.load(FIXTURES / "l2f_fixtures.npz"))


def case_params(fx, c: int, dtype=torch.float32) -> Params:
    text = str(fx["params_json"][c])
    # the built-in case uses l2f's compiled-in parameters: compare against eyas' registry Crazyflie
    return sim.model_params("crazyflie", dtype=dtype) if not text else Params.from_l2f_json(text, dtype=dtype)


def unpack(x: torch.Tensor, force, torque) -> State:
    n = x.shape[0]
    f = torch.as_tensor(force, dtype=x.dtype).expand(n, 3)
    t = torch.as_tensor(torque, dtype=x.dtype).expand(n, 3)
    return State(x[:, 0:3], x[:, 3:7], x[:, 7:10], x[:, 10:13], x[:, 13:17], f, t)


def pack(s: State) -> torch.Tensor:
    return torch.cat([s.position, s.orientation, s.linear_velocity, s.angular_velocity, s.rpm], dim=-1)


def _cross_abs(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Componentwise magnitude bound of a x b from |a|, |b|."""
    a1, a2, a3 = a.unbind(-1)
    b1, b2, b3 = b.unbind(-1)
    return torch.stack([a2 * b3 + a3 * b2, a3 * b1 + a1 * b3, a1 * b2 + a2 * b1], dim=-1)


def roundoff_scale(x: torch.Tensor, x_next: torch.Tensor, action: torch.Tensor, params: Params) -> torch.Tensor:
    """(B, 17) magnitude S of everything that enters each component of one step x -> x_next (float64).

    States inside the step are bounded by M = max(|x|, |x_next|) + |x_next - x| (RK4 stage inputs stay within
    one step difference of the end points); the derivative's terms are bounded by evaluating it on M with
    every term replaced by its magnitude (G); S = M + dt * G."""
    p = params.to(dtype=torch.float64)
    d = p.dynamics
    x, x_next = x.double(), x_next.double()
    m = torch.maximum(x.abs(), x_next.abs()) + (x_next - x).abs()
    q, v, omega, rpm = m[:, 3:7], m[:, 7:10], m[:, 10:13], m[:, 13:17]
    c = d.rotor_thrust_coefficients.abs()
    thrust = c[..., 0] + c[..., 1] * rpm + c[..., 2] * rpm * rpm                          # (B, 4)
    rotor_thrust = d.rotor_thrust_directions.abs() * thrust[..., None]                    # (B, 4, 3)
    torque = (d.rotor_torque_directions.abs() * (thrust * d.rotor_torque_constants.abs())[..., None]
              + _cross_abs(d.rotor_positions.abs(), rotor_thrust)).sum(-2)
    gyroscopic = _cross_abs(omega, (d.J.abs() * omega[:, None, :]).sum(-1))
    g_position = v
    g_orientation = 0.5 * q.sum(-1, keepdim=True) * omega.amax(-1, keepdim=True) * torch.ones_like(q)
    # rotation f + 2 q0 (u x f) + 2 u x (u x f), |q| = 1, in magnitudes (|a x b|_abs <= 2 |a| |b|):
    # |f| (1 + 4 |q0| |u| + 8 |u|^2) <= 9 |f|
    g_velocity = 9 * rotor_thrust.sum(-2).norm(dim=-1, keepdim=True) / d.mass[:, None] + d.gravity.abs()
    g_angular = (d.J_inv.abs() * (torque + gyroscopic)[:, None, :]).sum(-1)
    setpoint = sim.action_to_setpoint(action.double(), p).abs()
    tau_min = torch.minimum(d.rotor_time_constants_rising, d.rotor_time_constants_falling)
    g_rpm = (setpoint + rpm) / tau_min
    g = torch.cat([g_position, g_orientation, g_velocity, g_angular, g_rpm], dim=-1)
    return m + p.integration.dt[:, None] * g


def disturbance_scale(force, torque, params: Params, n: int) -> torch.Tensor:
    """(B, 17) magnitude added by the constant disturbances (dt * |F| / m and dt * |J_inv| |T|)."""
    p = params.to(dtype=torch.float64)
    f = torch.as_tensor(force, dtype=torch.float64).abs().expand(n, 3)
    t = torch.as_tensor(torque, dtype=torch.float64).abs().expand(n, 3)
    out = torch.zeros(n, 17, dtype=torch.float64)
    out[:, 7:10] = f / p.dynamics.mass[:, None]
    out[:, 10:13] = (p.dynamics.J_inv.abs() * t[:, None, :]).sum(-1)
    return p.integration.dt[:, None] * out


def step_tolerance(x, x_next, action, params, force, torque) -> torch.Tensor:
    scale = roundoff_scale(x, x_next, action, params) + disturbance_scale(force, torque, params, x.shape[0])
    return 2 * gamma(N_STEP_CHAIN) * scale


def test_fixture_directory_is_small():
    size = sum(p.stat().st_size for p in FIXTURES.iterdir() if p.is_file())
    assert size < 5 * 2 ** 20, f"fixtures/l2f is {size / 2 ** 20:.1f} MiB"


def test_every_registry_model_and_randomized_sets_are_covered(fx):
    names = [str(n) for n in fx["name"]]
    assert {f"registry/{m}" for m in sim.MODEL_NAMES} <= set(names)
    assert sum(n.startswith("randomized/") for n in names) >= 8
    # the randomised cases carry non-zero disturbances, so the disturbance terms are exercised
    assert np.abs(fx["force"][[n.startswith("randomized/") for n in names]]).min() > 0


@SINGLE_STEPS
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_single_steps_match_l2f(fx, dtype, step):
    for c, name in enumerate(fx["name"]):
        params = case_params(fx, c, dtype)
        x = torch.as_tensor(fx["step_state"][c], dtype=dtype)
        action = torch.as_tensor(fx["step_action"][c], dtype=dtype)
        out = pack(step(unpack(x, fx["force"][c], fx["torque"][c]), action, params)).double()
        expected = torch.as_tensor(fx["step_next_state"][c], dtype=torch.float64)
        # float64 eyas carries no round-off of its own: only l2f's gamma_n S remains, the 2x is not needed
        tol = step_tolerance(x, expected, action, params, fx["force"][c], fx["torque"][c])
        if dtype == torch.float64:
            tol = tol / 2
        ratio = ((out - expected).abs() / tol).max().item()
        assert ratio <= 1, f"{name}: step differs from l2f by {ratio:.2f} x the round-off bound"


def test_relative_step_error_is_float32_roundoff(fx):
    """Headline figure: per-component error relative to the component's magnitude in the batch."""
    worst = 0.0
    for c in range(len(fx["name"])):
        params = case_params(fx, c)
        x = torch.as_tensor(fx["step_state"][c])
        out = pack(sim.step(unpack(x, fx["force"][c], fx["torque"][c]), torch.as_tensor(fx["step_action"][c]), params))
        expected = torch.as_tensor(fx["step_next_state"][c])
        magnitude = expected.abs().amax(dim=0, keepdim=True)
        worst = max(worst, ((out - expected).abs() / magnitude).max().item())
    assert worst <= 1e-5


def test_observations_match_l2f(fx):
    """l2f's 22-D policy observation of the next state (rotation matrix from the quaternion, previous
    action = the unclamped action). Entries of R are sums of three products of |q_i| <= 1 terms: 4 roundings
    in a chain, magnitude <= 5, both implementations -> 2 gamma_4 * 5; copied entries must be identical."""
    for c, name in enumerate(fx["name"]):
        next_state = unpack(torch.as_tensor(fx["step_next_state"][c]), fx["force"][c], fx["torque"][c])
        action = torch.as_tensor(fx["step_action"][c])
        obs = policy_observation(next_state, action[:, None, :])
        expected = torch.as_tensor(fx["step_next_obs"][c])
        copied = [*range(0, 3), *range(12, 22)]
        assert torch.equal(obs[:, copied], expected[:, copied]), name
        assert (obs[:, 3:12] - expected[:, 3:12]).abs().max().item() <= 2 * gamma(4) * 5, name


@STEPS
def test_rollouts_stay_within_propagated_roundoff(fx, step):
    """Replay l2f's 100 closed-loop actions open loop from l2f's initial state.

    Rigorous first-order bound: two float32 evaluations of the step map f, each with local error
    |delta_j| <= gamma_n S_j per step (as above), drift apart by at most
        B_k = sum_{j < k} |Phi(k, j+1)| 2 gamma_n S_j,   Phi(k, j) = J_{k-1} ... J_j,  J_i = df/dx(x_i),
    with the Jacobians taken along the float64 trajectory (central differences, relative step 1e-6: truncation
    and cancellation errors ~1e-10 relative, negligible for a bound). The bound is worst case over the signs
    of all local errors, hence loose (docs/environment.md reports the measured drift)."""
    num_cases = len(fx["name"])
    params = Params.stack([case_params(fx, c, torch.float64) for c in range(num_cases)])
    params32 = params.to(dtype=torch.float32)
    force = torch.as_tensor(fx["force"], dtype=torch.float64)
    torque = torch.as_tensor(fx["torque"], dtype=torch.float64)
    reference = torch.as_tensor(fx["rollout_state"], dtype=torch.float64)   # (C, 101, 17) from l2f
    actions = torch.as_tensor(fx["rollout_action"], dtype=torch.float64)    # (C, 100, 4)

    def f(x: torch.Tensor, a: torch.Tensor, p: Params, frc, trq) -> torch.Tensor:
        state = State(x[:, 0:3], x[:, 3:7], x[:, 7:10], x[:, 10:13], x[:, 13:17], frc, trq)
        return pack(step(state, a, p, validate=False))

    # central differences for all cases at once: 2 * 17 perturbed copies of every case
    rep = lambda t: t.repeat_interleave(34, dim=0)  # noqa: E731
    params_rep = params.map(rep)
    signs = torch.tensor([1.0, -1.0], dtype=torch.float64).repeat_interleave(17)
    directions = (torch.cat([torch.eye(17), torch.eye(17)]) * signs[:, None]).double().repeat(num_cases, 1)

    x64, x32 = reference[:, 0], reference[:, 0].float()
    propagators = torch.zeros(0, num_cases, 17, 17, dtype=torch.float64)  # Phi(k, j + 1) for j < k
    local_bounds = torch.zeros(0, num_cases, 17, dtype=torch.float64)
    for k in range(actions.shape[1]):
        a = actions[:, k]
        x64_next = f(x64, a, params, force, torque)
        h = 1e-6 * x64.abs().clamp(min=1.0)
        probes = f(rep(x64) + directions * rep(h), rep(a), params_rep, rep(force), rep(torque)).reshape(num_cases, 2, 17, 17)
        jacobian = ((probes[:, 0] - probes[:, 1]) / (2 * h[:, :, None])).transpose(1, 2)  # (C, out, in)
        local = step_tolerance(x64, x64_next, a, params, force, torque)
        eye = torch.eye(17, dtype=torch.float64).expand(1, num_cases, 17, 17)
        propagators = torch.cat([jacobian[None] @ propagators, eye])
        local_bounds = torch.cat([local_bounds, local[None]])
        bound = (propagators.abs() @ local_bounds[..., None])[..., 0].sum(0)
        x32 = f(x32, a.float(), params32, force.float(), torque.float())
        x64 = x64_next
        ratio = ((x32.double() - reference[:, k + 1]).abs() / bound).max().item()
        assert ratio <= 1, f"step {k + 1}: eyas (float32) drifts from l2f by {ratio:.2f} x the propagated bound"
        # float64 eyas lacks eyas' own round-off, so half the bound applies to it
        assert ((x64 - reference[:, k + 1]).abs() <= bound / 2).all(), f"step {k + 1}: float64 eyas drifts from l2f"


def test_registry_matches_l2f_headers():
    """eyas' registry transcribes l2f's headers: identical double values, RAPTOR's motor permutation."""
    headers = json.loads((FIXTURES / "registry.json").read_text())
    assert set(headers) == set(sim.MODEL_NAMES)
    for name, dynamics in headers.items():
        assert sim.l2f_dynamics(name) == dynamics, name
        params = sim.model_params(name, dtype=torch.float64)
        order = list(range(4)) if name == "crazyflie" else [0, 3, 1, 2]
        np.testing.assert_array_equal(params.dynamics.rotor_positions[0].numpy(),
                                      np.array(dynamics["rotor_positions"])[order])


def test_raptor_motor_order_for_every_model():
    """Front-right, back-right, back-left, front-left (FLU: x forward, y left) for all registry models."""
    for name in sim.MODEL_NAMES:
        positions = sim.model_params(name).dynamics.rotor_positions[0]
        signs = torch.sign(positions[:, :2]).tolist()
        assert signs == [[1, -1], [-1, -1], [-1, 1], [1, 1]], name


def test_json_round_trip_is_byte_identical_to_l2f(fx):
    """Params.from_l2f_json(l2f output).to_l2f_json("l2f") reproduces l2f's `parameters_to_json` exactly."""
    for c, name in enumerate(fx["name"]):
        text = str(fx["l2f_json"][c])
        assert Params.from_l2f_json(text).to_l2f_json(float_format="l2f") == text, name


def test_exact_json_is_lossless(fx):
    for c in range(1, len(fx["name"])):
        params = Params.from_l2f_json(str(fx["params_json"][c]))
        again = Params.from_l2f_json(params.to_l2f_json())
        for a, b in zip(params.leaves(), again.leaves()):
            assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_step_is_the_reference_step(dtype):
    """`eyas.sim.fused` computes `sim.step`'s operations in the same order on rows: float64 agrees to 1e-13 relative
    per step (float64 round-off of a few reordered sums), float32 to its own round-off (gamma_n S as above); a wrong
    term (e.g. a missing disturbance or a swapped rotor) is O(1e-2) or more."""
    g = torch.Generator().manual_seed(3)
    params = sim.sample_domain_randomized_params(500, g, dtype=dtype)
    state = sim.sample_initial_state(params, g)
    action = torch.rand(500, 4, generator=g, dtype=dtype) * 2.4 - 1.2
    expected = pack_state17(sim.step(state, action, params))
    out = pack_state17(fused_step(state, action, params))
    scale = expected.abs().amax(0, keepdim=True).clamp(min=1.0)
    tol = 1e-13 if dtype == torch.float64 else 2 * gamma(N_STEP_CHAIN)
    assert ((out - expected).abs() / scale).max().item() <= tol


def pack_state17(s: State) -> torch.Tensor:
    return pack(s).double()


def test_fused_step_clamps_at_the_state_limit():
    """`fused` writes l2f's state limit as a literal (a module-level float costs torch.compile a second trace): it
    must stay `dynamics.STATE_LIMIT`."""
    from eyas.sim.dynamics import STATE_LIMIT

    rows = fused._limited(torch.tensor([1e9, -1e9, 5.0], dtype=torch.float64))
    assert rows.tolist() == [STATE_LIMIT, -STATE_LIMIT, 5.0]
