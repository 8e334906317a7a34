"""The scorecard's hold-out quadrotors: platforms designed outside RAPTOR's registry, that no eyas training flies.

RAPTOR's domain randomisation scales one geometry (the Crazyflie's: a symmetric X frame, vertical rotors, one thrust
curve shape). These platforms keep their masses, thrust-to-weight ratios and motor time constants inside the ranges
it draws (RAPTOR's own evaluation flies real vehicles of that span), and change what it never varies or reaches by
other routes. Each is one `Platform` row below with the reason it is there; `platform_params` builds its l2f
parameters (RAPTOR's motor order and MDP: 1 m position limit as the registry models, no disturbances), and
`Params.to_l2f_json` writes it for l2f (`eyas evaluate --dynamics FILE` reads such files back).

Model of a platform: rotor thrust ``f(w) = k (c0 + c1 w + c2 w^2)`` on the Crazyflie's normalised curve, ``k`` set
so that four rotors at full command lift ``thrust_to_weight`` times the weight; inertia of a frame whose mass sits
at the rotors' distance: ``J = inertia_share * m * diag(y^2, x^2, x^2 + y^2)`` with (x, y) the arm's half-spans
(the Crazyflie and the x500 have ``J_xx / (m (x^2 + y^2))`` of 0.18-0.20).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from eyas.sim import Params, model_params
from eyas.sim.registry import L2F_DYNAMICS


@dataclass(frozen=True)
class Platform:
    name: str
    why: str
    mass: float  # [kg]
    half_span: tuple[float, float]  # rotor (x, y) distance from the centre [m]
    thrust_to_weight: float
    rising: float  # motor time constants [s]
    falling: float
    torque_constant: float  # rotor drag torque / thrust [m]
    tilt_deg: float = 0.0  # each rotor's thrust tilted towards the centre
    inertia_share: float = 0.19


HOLDOUT = (
    Platform("brushed_45g", "a brushed micro half again the Crazyflie's size, slow to spin down", 0.045,
             (0.033, 0.033), 2.2, 0.06, 0.20, 0.006, inertia_share=0.22),
    Platform("racer_550g", "a 5-inch racer: thrust-to-weight 4.5 with fast motors, little damping from its lag",
             0.55, (0.08, 0.08), 4.5, 0.03, 0.04, 0.012),
    Platform("heavy_3kg", "a heavy lifter near the bottom of the thrust range (1.8), large and slow",
             3.0, (0.25, 0.25), 1.8, 0.09, 0.25, 0.02),
    Platform("h_frame_1kg", "an H frame: arms 2.3x wider than long, roll and pitch inertia 5:1 (RAPTOR's frames are "
             "square)", 1.1, (0.07, 0.16), 2.6, 0.05, 0.12, 0.016),
    Platform("tilted_800g", "rotors tilted 10 degrees inwards (dihedral): thrust not along the body axis",
             0.8, (0.12, 0.12), 3.0, 0.04, 0.08, 0.014, tilt_deg=10.0),
    Platform("soft_yaw_300g", "rotor drag torque below the randomisation's least (0.004 m): weak yaw authority",
             0.3, (0.06, 0.06), 2.8, 0.05, 0.15, 0.004),
)
HOLDOUT_NAMES = tuple(p.name for p in HOLDOUT)


def platform_params(platform: Platform | str, dtype: torch.dtype = torch.float32, device=None) -> Params:
    """The l2f parameters (a batch of one) of a hold-out platform (module docstring)."""
    p = platform if isinstance(platform, Platform) else _by_name(platform)
    params = model_params("crazyflie", torch.float64)
    d = params.dynamics
    x, y = p.half_span
    signs = torch.tensor([[1.0, -1.0], [-1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]], dtype=torch.float64)  # FR BR BL FL
    d.rotor_positions = torch.cat([signs * torch.tensor([x, y], dtype=torch.float64), torch.zeros(4, 1,
                                                                                                  dtype=torch.float64)],
                                  -1)[None]
    tilt = math.radians(p.tilt_deg)
    inward = -signs / signs.norm(dim=-1, keepdim=True)
    d.rotor_thrust_directions = torch.cat([inward * math.sin(tilt), torch.full((4, 1), math.cos(tilt),
                                                                               dtype=torch.float64)], -1)[None]
    curve = torch.tensor(L2F_DYNAMICS["crazyflie"]["rotor_thrust_coefficients"][0], dtype=torch.float64)
    per_rotor = p.thrust_to_weight * p.mass * 9.81 / 4 / (curve.sum() * math.cos(tilt))
    d.rotor_thrust_coefficients = (curve * per_rotor).expand(1, 4, 3).clone()
    d.rotor_torque_constants = torch.full((1, 4), p.torque_constant, dtype=torch.float64)
    d.rotor_time_constants_rising = torch.full((1, 4), p.rising, dtype=torch.float64)
    d.rotor_time_constants_falling = torch.full((1, 4), p.falling, dtype=torch.float64)
    d.mass = torch.tensor([p.mass], dtype=torch.float64)
    J = p.inertia_share * p.mass * torch.tensor([y * y, x * x, x * x + y * y], dtype=torch.float64)
    d.J, d.J_inv = torch.diag(J)[None], torch.diag(1 / J)[None]
    c = curve * per_rotor * math.cos(tilt)  # the hover command: four rotors lift the weight
    hover = (-c[1] + torch.sqrt(c[1] ** 2 - 4 * c[2] * (c[0] - p.mass * 9.81 / 4))) / (2 * c[2])
    d.hovering_throttle_relative = hover.reshape(1)
    return params.to(dtype=dtype, device=device)


def _by_name(name: str) -> Platform:
    for p in HOLDOUT:
        if p.name == name:
            return p
    raise ValueError(f"unknown hold-out platform {name!r}; platforms: {', '.join(HOLDOUT_NAMES)}")
