"""The multirotor models RAPTOR is evaluated on, with the values of l2f's `parameters/dynamics/*.h` (l2f 2.0.18).

Model names follow RAPTOR's registry (rl-tools `src/foundation_policy/pre_training/sample_dynamics_parameters.cpp`):
crazyflie, x500 (l2f `x500::real`), mrs, fs (l2f `fs::base`), arpl, flightmare, soft. l2f defines all but the
Crazyflie in PX4 motor order (front-right, back-left, front-left, back-right); RAPTOR permutes them with
`permute_rotors(0, 3, 1, 2)` into the Crazyflie order its policy uses: front-right, back-right, back-left,
front-left. `model_params` applies that permutation; `l2f_dynamics(name)` returns the unpermuted header values.

Values are python (double) literals and expressions exactly as written in the headers; they are rounded to the
requested dtype when turned into tensors, like l2f's `constexpr` initialisers are rounded to `float`.
Known quirks kept for fidelity: x500's `J[0][0]` is `2.1705-2` (= 0.1705, a typo for 2.1705e-2; its `J_inv`
uses 1/2.1705e-2), and mrs' `hovering_throttle_relative` is in absolute rotor-speed units.
"""
from __future__ import annotations

import copy

import torch

from .params import DEFAULT_DT, DOMAIN_RANDOMIZATION_DISABLED, NO_DISTURBANCES, POINT_TRAJECTORY, RAPTOR_MDP, Params

# Rotor index map from PX4 order to the Crazyflie/RAPTOR order (rl-tools `permute_rotors(device, env, d, 0, 3, 1, 2)`).
PX4_TO_CRAZYFLIE = (0, 3, 1, 2)
_PER_ROTOR_KEYS = ("rotor_positions", "rotor_thrust_directions", "rotor_torque_directions", "rotor_thrust_coefficients",
                   "rotor_torque_constants", "rotor_time_constants_rising", "rotor_time_constants_falling")


def _same4(x):
    return [copy.deepcopy(x) for _ in range(4)]


def _diag(a, b, c):
    return [[a, 0.0, 0.0], [0.0, b, 0.0], [0.0, 0.0, c]]


_UP = _same4([0.0, 0.0, 1.0])
_PX4_TORQUE_DIRECTIONS = [[0.0, 0.0, -1.0], [0.0, 0.0, -1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]


def _px4_positions(x, y):
    return [[x, -y, 0.0], [-x, y, 0.0], [x, y, 0.0], [-x, -y, 0.0]]


# l2f parameters/dynamics/<model>.h, rotor order as in the header.
L2F_DYNAMICS: dict[str, dict] = {
    "crazyflie": {
        "rotor_positions": [[0.028, -0.028, 0.0], [-0.028, -0.028, 0.0], [-0.028, 0.028, 0.0], [0.028, 0.028, 0.0]],
        "rotor_thrust_directions": _UP,
        "rotor_torque_directions": [[0.0, 0.0, -1.0], [0.0, 0.0, 1.0], [0.0, 0.0, -1.0], [0.0, 0.0, 1.0]],
        "rotor_thrust_coefficients": _same4([0.00352526, 0.01437313, 0.09223048]),
        "rotor_torque_constants": [4.665e-3] * 4,
        "rotor_time_constants_rising": [0.05545454545454546] * 4,
        "rotor_time_constants_falling": [0.24939393939393945] * 4,
        "mass": 0.027 + 0.0017 + 0.0003 + 0.0016,
        "gravity": [0.0, 0.0, -9.81],
        "J": _diag(9.416556729130406e-06, 9.644051701582312e-06, 1.745951732253285e-05),
        "J_inv": _diag(106195.93007988465, 103690.85846314249, 57275.35197719487),
        "hovering_throttle_relative": 0.7261389721508553,
        "action_limit": {"min": 0.0, "max": 1.0},
    },
    "x500": {  # l2f x500::real
        "rotor_positions": _px4_positions(0.176776695296636, 0.176776695296636),
        "rotor_thrust_directions": _UP,
        "rotor_torque_directions": _PX4_TORQUE_DIRECTIONS,
        "rotor_thrust_coefficients": _same4([0.0, 0.0, 15.926119900619797]),
        "rotor_torque_constants": [1.0847e-1] * 4,
        "rotor_time_constants_rising": [0.054] * 4,
        "rotor_time_constants_falling": [0.054] * 4,
        "mass": 2.000,
        "gravity": [0.0, 0.0, -9.81],
        "J": _diag(2.1705 - 2, 2.1304e-2, 0.039396244),  # sic: "2.1705-2" in l2f
        "J_inv": _diag(46.072333563695004, 46.939541870071345, 25.38313043243412),
        "hovering_throttle_relative": 0.5549636212401485,
        "action_limit": {"min": 0.0, "max": 1.0},
    },
    "mrs": {
        "rotor_positions": _px4_positions(0.1202081528017130834795622718047525268048,
                                          0.1202081528017130834795622718047525268048),
        "rotor_thrust_directions": _UP,
        "rotor_torque_directions": _PX4_TORQUE_DIRECTIONS,
        "rotor_thrust_coefficients": _same4([-1.7689986848125325291647413905593566596508,
                                             0.0038360810526746032603218061751704226481,
                                             0.0000013298253500372891536393180067499031]),
        "rotor_torque_constants": [0.016] * 4,
        "rotor_time_constants_rising": [0.04] * 4,
        "rotor_time_constants_falling": [0.04] * 4,
        "mass": 1.7,
        "gravity": [0.0, 0.0, -9.81],
        "J": _diag(0.0079113750000000000045519144009631418157, 0.0079113750000000000045519144009631418157,
                   0.0123065833333333343041493534997243841644),
        "J_inv": _diag(126.4002780806117840484148473478853702545166, 126.4002780806117840484148473478853702545166,
                       81.2573216232504194067587377503514289855957),
        "hovering_throttle_relative": 1636.011825401871,
        "action_limit": {"min": 0.0, "max": 2000.0},
    },
    "fs": {  # l2f fs::base
        "rotor_positions": _px4_positions(0.20895, 0.240666),
        "rotor_thrust_directions": _UP,
        "rotor_torque_directions": _PX4_TORQUE_DIRECTIONS,
        "rotor_thrust_coefficients": _same4([0.7846629595902934, 9.15540123440728, 18.005569363583604]),
        "rotor_torque_constants": [0.01492] * 4,
        "rotor_time_constants_rising": [0.06532] * 4,
        "rotor_time_constants_falling": [0.06532] * 4,
        "mass": 3.35000,
        "gravity": [0.0, 0.0, -9.81],
        "J": _diag(7.56e-2, 7.296e-2, 7.296e-2 * 1.879),
        "J_inv": _diag(13.227513227513228, 13.706140350877194, 7.294380176092173),
        "hovering_throttle_relative": 0.44905530730868937,
        "action_limit": {"min": 0.0, "max": 1.0},
    },
    "arpl": {
        "rotor_positions": _px4_positions(0.0775, 0.0981),
        "rotor_thrust_directions": _UP,
        "rotor_torque_directions": _PX4_TORQUE_DIRECTIONS,
        "rotor_thrust_coefficients": _same4([-0.5300192490953086, 8.971435376396558, -0.8911788522090669]),
        "rotor_torque_constants": [0.005964552] * 4,
        "rotor_time_constants_rising": [0.033] * 4,
        "rotor_time_constants_falling": [0.033] * 4,
        "mass": 0.782,
        "gravity": [0.0, 0.0, -9.81],
        "J": _diag(1.7665e-3, 1.3766e-3, (1.7665e-3 + 1.3766e-3) / 2 * 1.879),
        "J_inv": _diag(1 / 1.7665e-3, 1 / 1.3766e-3, 1 / ((1.7665e-3 + 1.3766e-3) / 2 * 1.879)),
        "hovering_throttle_relative": 0.13095934350152208,
        "action_limit": {"min": 0.0, "max": 1.0},
    },
    "flightmare": {
        "rotor_positions": _px4_positions(0.17 * 0.7071067811865475, 0.17 * 0.7071067811865475),
        "rotor_thrust_directions": _UP,
        "rotor_torque_directions": _PX4_TORQUE_DIRECTIONS,
        "rotor_thrust_coefficients": _same4([-1.7689986848125325, 11.50824315802381, 11.968428150335603]),
        "rotor_torque_constants": [0.016] * 4,
        "rotor_time_constants_rising": [0.0200] * 4,
        "rotor_time_constants_falling": [0.0200] * 4,
        "mass": 0.73,
        "gravity": [0.0, 0.0, -9.81],
        "J": _diag(0.00791, 0.00791, 0.0123),
        "J_inv": _diag(126.42225031605562, 126.42225031605562, 81.30081300813008),
        "hovering_throttle_relative": 0.5,
        "action_limit": {"min": 0.0, "max": 1.0},
    },
    "soft": {
        "rotor_positions": _px4_positions(0.142, 0.169),
        "rotor_thrust_directions": _UP,
        "rotor_torque_directions": _PX4_TORQUE_DIRECTIONS,
        "rotor_thrust_coefficients": _same4([-0.13662779341843762, 4.247460030890121, 3.766033614431835]),
        "rotor_torque_constants": [0.2] * 4,
        "rotor_time_constants_rising": [0.040] * 4,
        "rotor_time_constants_falling": [0.040] * 4,
        "mass": 0.970,
        "gravity": [0.0, 0.0, -9.81],
        "J": _diag(8.1547e-3, 5.2261e-3, 12.0427e-3),
        "J_inv": _diag(122.62866813003542, 191.3472761715237, 83.0378569589876),
        "hovering_throttle_relative": 0.7261389721508553,
        "action_limit": {"min": 0.0, "max": 1.0},
    },
}

MODEL_NAMES: tuple[str, ...] = tuple(L2F_DYNAMICS)
L2F_HEADER_NAMES = {"crazyflie": "crazyflie", "x500": "x500::real", "mrs": "mrs", "fs": "fs::base", "arpl": "arpl",
                    "flightmare": "flightmare", "soft": "soft"}


def permute_rotors(dynamics: dict, order: tuple[int, ...]) -> dict:
    """Dynamics dict with rotor `i` taken from rotor `order[i]` (rl-tools `permute_rotors`)."""
    out = copy.deepcopy(dynamics)
    for key in _PER_ROTOR_KEYS:
        out[key] = [copy.deepcopy(dynamics[key][j]) for j in order]
    return out


def l2f_dynamics(name: str) -> dict:
    """The model's dynamics as in the l2f header (rotor order unchanged)."""
    if name not in L2F_DYNAMICS:
        raise ValueError(f"unknown model {name!r}; registry models: {', '.join(MODEL_NAMES)}")
    return copy.deepcopy(L2F_DYNAMICS[name])


def raptor_dynamics(name: str) -> dict:
    """The model's dynamics in RAPTOR's motor order (front-right, back-right, back-left, front-left)."""
    dynamics = l2f_dynamics(name)
    return dynamics if name == "crazyflie" else permute_rotors(dynamics, PX4_TO_CRAZYFLIE)


def model_params(name: str, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Params:
    """Registry model `name` as a `Params` batch of one: RAPTOR motor order and RAPTOR's MDP, no disturbances."""
    return Params.from_dict(
        {"dynamics": raptor_dynamics(name), "integration": {"dt": DEFAULT_DT}, "mdp": RAPTOR_MDP,
         "disturbances": NO_DISTURBANCES, "domain_randomization": DOMAIN_RANDOMIZATION_DISABLED,
         "trajectory": POINT_TRAJECTORY},
        dtype=dtype, device=device)
