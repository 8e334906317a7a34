"""The teacher observation's privileged dynamics features (48 per environment; layout in `eyas.envs.point_control`)."""
from __future__ import annotations

import torch

from eyas import sim
from eyas.sim import Params, State

NUM_DYNAMICS_FEATURES = 48


def dynamics_features(params: Params, state: State, motor_scale: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 48) privileged dynamics features of the teacher observation (layout in the module docstring);
    ``motor_scale`` (B, 4): each rotor's share of its thrust curve (a weak motor, `eyas.envs.scenario`)."""
    d = params.dynamics
    n = params.batch_size
    weight = d.mass * torch.linalg.vector_norm(d.gravity, dim=-1)
    max_speed = d.action_limit.max[:, None, None]
    powers = torch.cat([torch.ones_like(max_speed), max_speed, max_speed * max_speed], dim=-1)  # (B, 1, 3)
    rotor_distance = torch.linalg.vector_norm(d.rotor_positions, dim=-1)
    arm = rotor_distance.amax(-1)
    j_inv_diagonal = torch.diagonal(d.J_inv, dim1=-2, dim2=-1)
    thrust = d.rotor_thrust_coefficients if motor_scale is None else d.rotor_thrust_coefficients * motor_scale[..., None]
    force = state.force if state.force is not None else torch.zeros_like(state.position)
    torque = state.torque if state.torque is not None else torch.zeros_like(state.position)
    features = torch.cat([
        d.mass.log()[:, None],
        ((thrust * powers).sum(-1).sum(-1) / weight)[:, None],  # thrust-to-weight at full action (weak motors too)
        (arm / 0.1)[:, None],
        j_inv_diagonal.abs().clamp(min=1e-12).log10(),
        (thrust * powers / weight[:, None, None]).reshape(n, 12),
        (d.rotor_positions / arm[:, None, None]).reshape(n, 12),
        d.rotor_torque_constants * 100,
        d.rotor_time_constants_rising / 0.1,
        d.rotor_time_constants_falling / 0.1,
        force / weight[:, None],
        (d.J_inv * torque[:, None, :]).sum(-1) / 100,
    ], dim=-1)
    assert features.shape[-1] == NUM_DYNAMICS_FEATURES
    return features
