"""Batched multirotor dynamics of l2f (rl-tools `rl/environments/l2f`), ported to torch.

Model (l2f `operations_generic/60_dynamics.h`, `70_post_integration.h`, `operations_generic.h::step`):

    action a in [-1, 1]^4 (clamped)  ->  rotor-speed setpoint  s = a * h + min + h,  h = (max - min) / 2
    rotor thrust       f_i = c_i0 + c_i1 w_i + c_i2 w_i^2      along its thrust direction d_i (body frame)
    body torque        tau = sum_i  k_i f_i t_i + r_i x (f_i d_i)          (drag torque + lever arm)
    dp/dt = v                                                     (world frame)
    dq/dt = 1/2 q (x) (0, omega)                                  (w-first quaternion, body-to-world)
    dv/dt = R(q) sum_i f_i d_i / m + g + F / m                    (F: per-episode disturbance force)
    domega/dt = J_inv (tau - omega x J omega) + J_inv T           (T: per-episode disturbance torque)
    dw_i/dt = (s_i - w_i) / T_i,  T_i = rising if s_i >= w_i else falling   (first-order motor lag)

integrated with one classic RK4 step of `dt` (the rotor speeds are part of the integrated state), then the
quaternion is normalised, positions/velocities are clamped to +-1e5 (l2f's state limits) and rotor speeds to
[min, max]. Finite actions outside [-1, 1] are clamped like l2f does; NaN/inf actions raise `ValueError`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .params import Dynamics, Params, parameter_problems
from .tensor_tree import TensorTree

STATE_LIMIT = 100000.0  # l2f STATE_LIMIT_POSITION / _VELOCITY / _ANGULAR_VELOCITY


@dataclass
class State(TensorTree):
    """Batched multirotor state. Orientation is a unit quaternion (w, x, y, z) rotating body into world
    (FLU body axes, z-up world); angular velocity is in the body frame; `rpm` are rotor speeds in the
    units of the model's action limits. `force` (world frame) and `torque` (body frame) are the constant
    per-episode disturbances (l2f `StateRandomForce`)."""

    position: torch.Tensor          # (B, 3)
    orientation: torch.Tensor       # (B, 4)
    linear_velocity: torch.Tensor   # (B, 3)
    angular_velocity: torch.Tensor  # (B, 3)
    rpm: torch.Tensor               # (B, 4)
    force: torch.Tensor | None = None   # (B, 3) or None for zero
    torque: torch.Tensor | None = None  # (B, 3) or None for zero

    @classmethod
    def hover(cls, params: Params, batch_size: int | None = None) -> "State":
        """l2f `initial_state`: at rest at the origin, level, rotors at `hovering_throttle_relative`."""
        d = params.dynamics
        n = params.batch_size if batch_size is None else batch_size
        kwargs = {"dtype": params.dtype, "device": params.device}
        rpm = d.hovering_throttle_relative * (d.action_limit.max - d.action_limit.min) + d.action_limit.min
        orientation = torch.zeros(n, 4, **kwargs)
        orientation[:, 0] = 1
        return cls(torch.zeros(n, 3, **kwargs), orientation, torch.zeros(n, 3, **kwargs), torch.zeros(n, 3, **kwargs),
                   rpm[:, None].expand(n, 4).clone(), torch.zeros(n, 3, **kwargs), torch.zeros(n, 3, **kwargs))


def quaternion_to_rotation_matrix(q: torch.Tensor) -> torch.Tensor:
    """(B, 4) w-first unit quaternions -> (B, 3, 3) rotation matrices (l2f `quaternion_to_rotation_matrix`)."""
    w, x, y, z = q.unbind(-1)
    rows = [
        1 - 2 * y * y - 2 * z * z, 2 * x * y - 2 * w * z, 2 * x * z + 2 * w * y,
        2 * x * y + 2 * w * z, 1 - 2 * x * x - 2 * z * z, 2 * y * z - 2 * w * x,
        2 * x * z - 2 * w * y, 2 * y * z + 2 * w * x, 1 - 2 * x * x - 2 * y * y,
    ]
    return torch.stack(rows, dim=-1).reshape(*q.shape[:-1], 3, 3)


def rotate_vector(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Rotate body-frame vectors `v` (B, 3) by quaternions `q` (B, 4): v + 2 q0 (u x v) + 2 u x (u x v), u = q[1:]."""
    u = q[..., 1:]
    uv2 = 2 * torch.linalg.cross(u, v)
    return torch.linalg.cross(u, uv2) + q[..., :1] * uv2 + v


def _quaternion_derivative(q: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
    w, x, y, z = q.unbind(-1)
    ox, oy, oz = omega.unbind(-1)
    return 0.5 * torch.stack([
        -x * ox - y * oy - z * oz,
        w * ox + y * oz - z * oy,
        w * oy + z * ox - x * oz,
        w * oz + x * oy - y * ox,
    ], dim=-1)


def _matvec(A: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) @ (B, 3) without a batched GEMM (faster for 3x3 on CPU)."""
    return (A * v[..., None, :]).sum(-1)


def _derivative(x: torch.Tensor, setpoint: torch.Tensor, d: Dynamics, inverse_mass: torch.Tensor,
                force_acceleration: torch.Tensor | None, torque_acceleration: torch.Tensor | None) -> torch.Tensor:
    """Time derivative of the packed state x = [p(3), q(4), v(3), omega(3), rpm(4)] (l2f `multirotor_dynamics`)."""
    q, v, omega, rpm = x[:, 3:7], x[:, 7:10], x[:, 10:13], x[:, 13:17]
    c = d.rotor_thrust_coefficients
    thrust_magnitude = c[..., 0] + c[..., 1] * rpm + c[..., 2] * rpm * rpm                     # (B, 4)
    rotor_thrust = d.rotor_thrust_directions * thrust_magnitude[..., None]                    # (B, 4, 3)
    thrust = rotor_thrust.sum(dim=-2)
    torque = (d.rotor_torque_directions * (thrust_magnitude * d.rotor_torque_constants)[..., None]
              + torch.linalg.cross(d.rotor_positions, rotor_thrust)).sum(dim=-2)

    linear_acceleration = rotate_vector(q, thrust) * inverse_mass[:, None] + d.gravity
    angular_acceleration = _matvec(d.J_inv, torque - torch.linalg.cross(omega, _matvec(d.J, omega)))
    if force_acceleration is not None:
        linear_acceleration = linear_acceleration + force_acceleration
    if torque_acceleration is not None:
        angular_acceleration = angular_acceleration + torque_acceleration

    time_constant = torch.where(setpoint >= rpm, d.rotor_time_constants_rising, d.rotor_time_constants_falling)
    rpm_rate = (setpoint - rpm) / time_constant
    return torch.cat([v, _quaternion_derivative(q, omega), linear_acceleration, angular_acceleration, rpm_rate], dim=-1)


def action_to_setpoint(action: torch.Tensor, params: Params) -> torch.Tensor:
    """Clamp actions to [-1, 1] and map them linearly onto [action_limit.min, action_limit.max] (l2f `step`)."""
    limit = params.dynamics.action_limit
    half_range = ((limit.max - limit.min) / 2)[:, None]
    return action.clamp(-1, 1) * half_range + limit.min[:, None] + half_range


def check_inputs(state: State, action: torch.Tensor, params: Params, validate: bool = True) -> None:
    """Raise `ValueError` for a wrong action shape/dtype/device, batch mismatch, NaN/inf actions or invalid
    parameters (non-positive mass, singular inertia, ...). Value checks cost one host sync."""
    batch = state.position.shape[0]
    if not isinstance(action, torch.Tensor):
        raise ValueError(f"action must be a torch.Tensor of shape ({batch}, 4), got {type(action).__name__}")
    if action.ndim != 2 or action.shape[1] != 4 or action.shape[0] != batch:
        raise ValueError(f"action must have shape ({batch}, 4) (batch, rotors), got {tuple(action.shape)}")
    if not action.is_floating_point():
        raise ValueError(f"action must be a floating-point tensor, got {action.dtype}")
    if params.batch_size not in (1, batch):
        raise ValueError(f"params batch size {params.batch_size} does not match the state batch size {batch}")
    if state.position.dtype != params.dtype:
        raise ValueError(f"state dtype {state.position.dtype} differs from params dtype {params.dtype}; "
                         f"use params.to(dtype=...)")
    if action.device != state.position.device or params.device != state.position.device:
        raise ValueError(f"state ({state.position.device}), action ({action.device}) and params ({params.device}) "
                         "must be on the same device")
    if not validate:
        return
    param_flags, param_messages = parameter_problems(params)
    flags = torch.cat([torch.isnan(action).any().reshape(1),
                       torch.isinf(action).any().reshape(1), param_flags.any(dim=1)]).tolist()  # one sync
    if flags[0]:
        raise ValueError("action contains NaN")
    if flags[1]:
        raise ValueError("action contains inf; actions must be finite (finite values outside [-1, 1] are clamped)")
    for problem, is_bad in zip(param_messages, flags[2:]):
        if is_bad:
            raise ValueError(f"invalid l2f parameters: {problem}")


def step(state: State, action: torch.Tensor, params: Params, validate: bool = True) -> State:
    """Advance `state` by one l2f step of `params.integration.dt` under `action` (B, 4) in [-1, 1].

    Motor order is that of `params` (RAPTOR: front-right, back-right, back-left, front-left). `params` may
    have batch size 1 (shared) or B. With `validate=True` invalid inputs raise `ValueError` (see `check_inputs`).
    """
    check_inputs(state, action, params, validate)
    d = params.dynamics
    dt = params.integration.dt[:, None]
    action = action.to(state.position.dtype)
    setpoint = action_to_setpoint(action, params)
    inverse_mass = 1 / d.mass
    force_acceleration = None if state.force is None else state.force / d.mass[:, None]
    torque_acceleration = None if state.torque is None else _matvec(d.J_inv, state.torque)

    x = torch.cat([state.position, state.orientation, state.linear_velocity, state.angular_velocity, state.rpm], dim=-1)
    f = lambda y: _derivative(y, setpoint, d, inverse_mass, force_acceleration, torque_acceleration)  # noqa: E731
    k1 = f(x)
    k2 = f(x + dt / 2 * k1)
    k3 = f(x + dt / 2 * k2)
    k4 = f(x + dt * k3)
    x_next = x + dt / 6 * k1 + dt / 3 * k2 + dt / 3 * k3 + dt / 6 * k4

    orientation = x_next[:, 3:7]
    orientation = orientation / orientation.square().sum(-1, keepdim=True).sqrt()
    limit = d.action_limit
    return State(
        position=x_next[:, 0:3].clamp(-STATE_LIMIT, STATE_LIMIT),
        orientation=orientation,
        linear_velocity=x_next[:, 7:10].clamp(-STATE_LIMIT, STATE_LIMIT),
        angular_velocity=x_next[:, 10:13].clamp(-STATE_LIMIT, STATE_LIMIT),
        rpm=torch.minimum(torch.maximum(x_next[:, 13:17], limit.min[:, None]), limit.max[:, None]),
        force=state.force,
        torque=state.torque,
    )
