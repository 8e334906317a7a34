"""RAPTOR's domain randomisation and l2f's initial-state distribution, batched in torch.

`sample_domain_randomized_params` ports l2f `_sample_initial_parameters(ParametersDomainRandomization)`
(`operations_generic/10_sample_initial_parameters.h`). Starting from the nominal model (the Crazyflie),
for each parameter set:

 1. thrust-to-weight t2w ~ U(t2w_min, t2w_max)
 2. mass: size ~ U(cbrt(mass_min), cbrt(mass_max)), mass = clamp(size^3, mass_min, mass_max)
    (uniform in size, not mass); scale = cbrt(mass / nominal mass)
 3. thrust curves *= (t2w / nominal t2w) * (mass / nominal mass)
 4. torque-to-inertia tti ~ U(tti_min, tti_max); nominal tti = |x of rotor 0| * sqrt(2) * (t2w m |g| / 4) / J_xx
 5. size deviation f ~ Normal(mean=-dev, std=dev) (sic: l2f passes (-dev, dev) as (mean, std)),
    size factor = 1 / (1 - f) if f < 0 else 1 + f; rotor distance factor = scale * size factor
 6. diagonal of J /= (tti / nominal tti) / rotor distance factor, J_inv diagonal *= the same;
    rotor positions *= rotor distance factor;
    termination.position_threshold = 20 * max rotor distance, init.max_position = 10 * max rotor distance
 7. rotor torque constant ~ U(min, max), shared by all rotors
 8. disturbance force std = U(0, max(t2w - 1, 0) * disturbance_force_max) * t2w * mass / 3
    (sic: l2f leaves out g, so the std is in units of "kg" times a weight multiple)
 9. rising / falling motor time constants ~ U(min, max), each shared by all rotors

Values are computed in float64 (as RAPTOR's `sample_dynamics_parameters.cpp`, T=double) and then cast.

`sample_initial_state` ports l2f `_sample_initial_state` (`operations_generic/30_sample_initial_state.h`):
with probability `init.guidance` the multirotor starts at rest at the target, level; otherwise position,
linear and angular velocity are uniform in +-max per axis and, if `init.max_angle > 0`, the orientation is a
rotation about a uniformly random axis by an angle ~ U(0, 1) rad (sic: l2f's `sample_orientation` ignores the
limit). Rotor speeds are uniform in [min_rpm, max_rpm] (given in [-1, 1] action units when `relative_rpm`).
Disturbance force components ~ Normal(mean, std), torque components ~ Normal(mean, std) (z: std / 100).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .dynamics import State
from .params import Params
from .registry import model_params


@dataclass(frozen=True)
class DomainRandomizationRanges:
    """Sampling ranges (l2f `DomainRandomization`); a None entry disables that randomisation.
    Defaults are RAPTOR's (rl-tools `src/foundation_policy/pre_training/sample_dynamics_parameters.cpp`)."""

    thrust_to_weight: tuple[float, float] | None = (1.5, 5.0)
    torque_to_inertia: tuple[float, float] | None = (40.0, 1200.0)  # [rad/s^2]
    mass: tuple[float, float] | None = (0.02, 5.0)                  # [kg]
    mass_size_deviation: float | None = 0.1
    rotor_time_constant_rising: tuple[float, float] | None = (0.03, 0.10)   # [s]
    rotor_time_constant_falling: tuple[float, float] | None = (0.03, 0.30)  # [s]
    rotor_torque_constant: tuple[float, float] | None = (0.005, 0.05)
    disturbance_force_max: float | None = 0.3

    def as_l2f(self) -> dict:
        """The ranges as l2f's `domain_randomization` JSON section (0 for disabled entries)."""
        def pair(r):
            return (0.0, 0.0) if r is None else (float(r[0]), float(r[1]))
        t2w, tti, mass = pair(self.thrust_to_weight), pair(self.torque_to_inertia), pair(self.mass)
        rise, fall, torque = pair(self.rotor_time_constant_rising), pair(self.rotor_time_constant_falling), \
            pair(self.rotor_torque_constant)
        return {
            "thrust_to_weight_min": t2w[0], "thrust_to_weight_max": t2w[1],
            "torque_to_inertia_min": tti[0], "torque_to_inertia_max": tti[1],
            "mass_min": mass[0], "mass_max": mass[1],
            "mass_size_deviation": float(self.mass_size_deviation or 0.0),
            "rotor_time_constant_rising_min": rise[0], "rotor_time_constant_rising_max": rise[1],
            "rotor_time_constant_falling_min": fall[0], "rotor_time_constant_falling_max": fall[1],
            "rotor_torque_constant_min": torque[0], "rotor_torque_constant_max": torque[1],
            "orientation_offset_angle_max": 0.0,
            "disturbance_force_max": float(self.disturbance_force_max or 0.0),
        }


RAPTOR_DOMAIN_RANDOMIZATION = DomainRandomizationRanges()


def _uniform(n: int, low, high, generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    u = torch.rand(n, generator=generator, device=like.device, dtype=like.dtype)
    return low + (high - low) * u


def sample_domain_randomized_params(
    num: int,
    generator: torch.Generator | None = None,
    ranges: DomainRandomizationRanges = RAPTOR_DOMAIN_RANDOMIZATION,
    nominal: Params | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    validate: bool = True,
) -> Params:
    """`num` parameter sets drawn like l2f's domain randomisation (see module docstring) around `nominal`
    (default: the Crazyflie with RAPTOR's MDP). `generator` must live on `device`. `validate=False` skips
    the (host-syncing) parameter check.

    Each enabled range takes one draw of `num` values from `generator`, in the order of the module docstring's
    steps (t2w, mass, tti, size deviation, torque constant, disturbance, rising, falling time constant); a
    disabled range takes none. Invalid ranges raise ValueError before any draw."""
    if device is None:
        device = generator.device if generator is not None else torch.device("cpu")
    p = _nominal_batch(num, nominal, device)
    _check_ranges(ranges)
    thrust_to_weight, scale_relative = _sample_thrust_and_mass(p, ranges, generator)
    _sample_inertia_and_size(p, ranges, generator, thrust_to_weight, scale_relative)
    _sample_rotor_and_disturbance(p, ranges, generator, thrust_to_weight)
    like = p.dynamics.mass
    for name, value in ranges.as_l2f().items():
        setattr(p.domain_randomization, name, torch.full_like(like, value))
    out = p.to(dtype=dtype)
    if validate:
        out.validate()
    return out


def _check_ranges(ranges: DomainRandomizationRanges) -> None:
    """Raise ValueError for the first range l2f's sampler cannot use (checked in sampling order)."""
    if ranges.thrust_to_weight is not None:
        low, high = ranges.thrust_to_weight
        if not (1.5 <= low < high):
            raise ValueError("thrust_to_weight range must satisfy 1.5 <= min < max (l2f), "
                             f"got {ranges.thrust_to_weight}")
    for name in ("mass", "torque_to_inertia"):
        value = getattr(ranges, name)
        if value is not None and not (0 < value[0] < value[1]):
            raise ValueError(f"{name} range must satisfy 0 < min < max, got {value}")
    if ranges.mass_size_deviation is not None and float(ranges.mass_size_deviation) == 0:
        raise ValueError("mass_size_deviation must be non-zero (use None to disable it)")
    if (ranges.rotor_time_constant_rising is None) != (ranges.rotor_time_constant_falling is None):
        raise ValueError("rising and falling rotor time constants are randomised together (l2f); set both or neither")


def _nominal_batch(num: int, nominal: Params | None, device: torch.device | str) -> Params:
    """`nominal` (default: the registry Crazyflie) as float64 on `device`, expanded to a batch of `num`."""
    if nominal is None:
        nominal = model_params("crazyflie", dtype=torch.float64, device=device)
    if nominal.batch_size != 1:
        raise ValueError(f"nominal must be a single parameter set, got a batch of {nominal.batch_size}")
    if nominal.dtype != torch.float64 or nominal.device != torch.device(device):
        nominal = nominal.to(device=device, dtype=torch.float64)
    return nominal.expand(num)


def _sample_thrust_and_mass(p: Params, ranges: DomainRandomizationRanges,
                            generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 1-3 in place on `p.dynamics` (mass, thrust curves); returns (thrust-to-weight, relative scale),
    the nominal values (p's own ratio, 1) where a range is disabled."""
    d = p.dynamics
    num, like = p.batch_size, d.mass
    mass_nominal = d.mass.clone()
    thrust_to_weight = thrust_to_weight_ratio(p)
    factor_thrust_to_weight = torch.ones_like(like)
    if ranges.thrust_to_weight is not None:
        sampled = _uniform(num, *ranges.thrust_to_weight, generator, like)
        factor_thrust_to_weight = sampled / thrust_to_weight
        thrust_to_weight = sampled

    scale_relative = torch.ones_like(like)
    factor_mass = torch.ones_like(like)
    if ranges.mass is not None:
        low, high = ranges.mass
        size = _uniform(num, low ** (1 / 3), high ** (1 / 3), generator, like)  # uniform in size, not in mass
        mass = (size * size * size).clamp(low, high)
        scale_relative = (mass / mass_nominal) ** (1 / 3)
        factor_mass = mass / mass_nominal
        d.mass = mass
    if ranges.thrust_to_weight is not None or ranges.mass is not None:
        factor = factor_thrust_to_weight * factor_mass
        d.rotor_thrust_coefficients = d.rotor_thrust_coefficients * factor[:, None, None]
    return thrust_to_weight, scale_relative


def _sample_inertia_and_size(p: Params, ranges: DomainRandomizationRanges, generator: torch.Generator | None,
                             thrust_to_weight: torch.Tensor, scale_relative: torch.Tensor) -> None:
    """Steps 4-6 in place on `p` (J, J_inv, rotor positions and the position limits that scale with them);
    expects `p.dynamics.mass` already sampled (step 2)."""
    d = p.dynamics
    num, like = p.batch_size, d.mass
    torque_to_inertia_factor = torch.ones_like(like)
    if ranges.torque_to_inertia is not None:
        max_thrust = thrust_to_weight * d.mass * torch.linalg.vector_norm(d.gravity, dim=-1) / 4
        max_torque = d.rotor_positions[:, 0, 0].abs() * 1.414213562373095 * max_thrust
        torque_to_inertia_nominal = max_torque / d.J[:, 0, 0]
        torque_to_inertia_factor = _uniform(num, *ranges.torque_to_inertia, generator, like) / torque_to_inertia_nominal

    rotor_distance_factor = torch.ones_like(like)
    if ranges.mass_size_deviation is not None:
        deviation = float(ranges.mass_size_deviation)
        # l2f passes (-dev, dev) as the normal's (mean, std)
        f = -deviation + deviation * torch.randn(num, generator=generator, device=like.device, dtype=like.dtype)
        size_factor = torch.where(f < 0, 1 / (1 - f), 1 + f)
        rotor_distance_factor = scale_relative * size_factor

    if ranges.torque_to_inertia is None and ranges.mass_size_deviation is None:
        return
    inertia_factor = torque_to_inertia_factor / rotor_distance_factor
    diagonal = torch.eye(3, dtype=torch.bool, device=like.device)
    d.J = torch.where(diagonal, d.J / inertia_factor[:, None, None], d.J)
    d.J_inv = torch.where(diagonal, d.J_inv * inertia_factor[:, None, None], d.J_inv)
    d.rotor_positions = d.rotor_positions * rotor_distance_factor[:, None, None]
    max_rotor_distance = torch.linalg.vector_norm(d.rotor_positions, dim=-1).amax(dim=-1)
    p.mdp.termination.position_threshold = max_rotor_distance * 20
    p.mdp.init.max_position = max_rotor_distance * 10


def _sample_rotor_and_disturbance(p: Params, ranges: DomainRandomizationRanges, generator: torch.Generator | None,
                                  thrust_to_weight: torch.Tensor) -> None:
    """Steps 7-9 in place on `p`: rotor torque constant, disturbance force, rotor time constants (one value
    per parameter set, shared by its four rotors)."""
    d = p.dynamics
    num, like = p.batch_size, d.mass
    if ranges.rotor_torque_constant is not None:
        d.rotor_torque_constants = _uniform(num, *ranges.rotor_torque_constant, generator, like)[:, None] \
            .expand(num, 4).clone()

    if ranges.disturbance_force_max is not None:
        surplus = (thrust_to_weight - 1.0).clamp(min=0)
        multiple = _uniform(num, torch.zeros_like(like), surplus * ranges.disturbance_force_max, generator, like)
        p.disturbances.random_force.mean = torch.zeros_like(like)
        p.disturbances.random_force.std = multiple * thrust_to_weight * d.mass / 3  # sic: no g (l2f)

    if ranges.rotor_time_constant_rising is not None:  # _check_ranges: both or neither
        rising = _uniform(num, *ranges.rotor_time_constant_rising, generator, like)
        falling = _uniform(num, *ranges.rotor_time_constant_falling, generator, like)
        d.rotor_time_constants_rising = rising[:, None].expand(num, 4).clone()
        d.rotor_time_constants_falling = falling[:, None].expand(num, 4).clone()


def thrust_to_weight_ratio(params: Params) -> torch.Tensor:
    """(B,) total thrust at full action over weight, assuming all rotors push along the same axis (l2f)."""
    d = params.dynamics
    max_action = d.action_limit.max[:, None]
    c = d.rotor_thrust_coefficients
    max_thrust = (c[..., 0] + c[..., 1] * max_action + c[..., 2] * max_action * max_action).sum(-1)
    return max_thrust / (d.mass * torch.linalg.vector_norm(d.gravity, dim=-1))


def sample_initial_state(params: Params, generator: torch.Generator | None = None) -> State:
    """One initial state per parameter set, drawn from l2f's distribution (see module docstring)."""
    init = params.mdp.init
    limit = params.dynamics.action_limit
    n = params.batch_size
    kwargs = {"device": params.device, "dtype": params.dtype}

    def rand(*shape):
        return torch.rand(*shape, generator=generator, **kwargs)

    def randn(*shape):
        return torch.randn(*shape, generator=generator, **kwargs)

    guidance = (rand(n) < init.guidance)[:, None]
    random_start = ~guidance

    position = (2 * rand(n, 3) - 1) * init.max_position[:, None]
    position = torch.where(random_start, position, torch.zeros_like(position))

    u, v, angle = rand(n, 3).unbind(-1)
    phi = 2.0 * math.pi * u
    cos_theta = 1.0 - 2.0 * v
    sin_theta = (1.0 - cos_theta * cos_theta).clamp(min=0).sqrt()
    axis = torch.stack([sin_theta * phi.cos(), sin_theta * phi.sin(), cos_theta], dim=-1)
    half = 0.5 * angle
    orientation = torch.cat([half.cos()[:, None], axis * half.sin()[:, None]], dim=-1)
    identity = torch.zeros_like(orientation)
    identity[:, 0] = 1
    orientation = torch.where(random_start & (init.max_angle > 0)[:, None], orientation, identity)

    linear_velocity = (2 * rand(n, 3) - 1) * init.max_linear_velocity[:, None]
    linear_velocity = torch.where(random_start, linear_velocity, torch.zeros_like(linear_velocity))
    angular_velocity = (2 * rand(n, 3) - 1) * init.max_angular_velocity[:, None]
    angular_velocity = torch.where(random_start, angular_velocity, torch.zeros_like(angular_velocity))

    force_dist, torque_dist = params.disturbances.random_force, params.disturbances.random_torque
    force = force_dist.mean[:, None] + force_dist.std[:, None] * randn(n, 3)
    torque_std = torch.stack([torque_dist.std, torque_dist.std, torque_dist.std / 100], dim=-1)
    torque = torque_dist.mean[:, None] + torque_std * randn(n, 3)

    span = limit.max - limit.min
    relative_low = (init.min_rpm + 1) / 2 * span + limit.min
    relative_high = (init.max_rpm + 1) / 2 * span + limit.min
    absolute_high = torch.where(init.max_rpm < 0, limit.max, init.max_rpm).minimum(limit.max)
    absolute_low = torch.where(init.min_rpm < 0, limit.min, init.min_rpm).minimum(absolute_high)
    low = torch.where(init.relative_rpm, relative_low, absolute_low)[:, None]
    high = torch.where(init.relative_rpm, relative_high, absolute_high)[:, None]
    rpm = low + (high - low) * rand(n, 4)
    return State(position, orientation, linear_velocity, angular_velocity, rpm, force, torque)
