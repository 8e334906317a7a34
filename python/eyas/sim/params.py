"""Batched l2f multirotor parameters (`Params`) and their JSON form (l2f's `parameters_to_json` schema).

Every leaf is a tensor with a leading batch dimension, so one `Params` holds the parameters of many
environments. Field names and nesting follow rl-tools' l2f `ParametersTrajectory<DomainRandomization<
Disturbances<ParametersBase>>>`:

    dynamics                rotor geometry, thrust curves, motor time constants, mass, gravity, J, J_inv, limits
    integration.dt          integration step [s]
    mdp                     init (initial-state distribution), reward, observation_noise, action_noise, termination
    disturbances            per-episode random force / torque (Gaussian mean, std)
    domain_randomization    ranges the parameters were sampled from (informational, as in l2f)
    trajectory              l2f's reference-trajectory mixture (kept for JSON fidelity; point control ignores it)

`J` and `J_inv` are stored separately because l2f integrates with both as given (they are not always each
other's inverse in l2f's registry, e.g. `x500_real`).
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from .tensor_tree import TensorTree

NUM_ROTORS = 4


def _tensor(value: Any, dtype: torch.dtype, device: torch.device | str | None) -> torch.Tensor:
    """`value` (a scalar or nested list for one environment) as a tensor with a batch dimension of 1."""
    if isinstance(value, bool):
        return torch.tensor([value], dtype=torch.bool, device=device)
    return torch.tensor([value], dtype=torch.float64, device=device).to(dtype)


def _from_dict(cls, values: dict, dtype, device):
    """Instantiate TensorTree dataclass `cls` from a dict of per-environment python values (all keys required)."""
    kwargs = {}
    for f in dataclasses.fields(cls):
        sub = _SUBTREES.get((cls, f.name))
        if f.name not in values:
            raise KeyError(f"missing key {f.name!r} for {cls.__name__}")
        kwargs[f.name] = _from_dict(sub, values[f.name], dtype, device) if sub else _tensor(values[f.name], dtype, device)
    return cls(**kwargs)


@dataclass
class Dynamics(TensorTree):
    rotor_positions: torch.Tensor            # (B, 4, 3) [m], body frame (FLU)
    rotor_thrust_directions: torch.Tensor    # (B, 4, 3)
    rotor_torque_directions: torch.Tensor    # (B, 4, 3)
    rotor_thrust_coefficients: torch.Tensor  # (B, 4, 3) thrust = c0 + c1 * rpm + c2 * rpm^2 [N]
    rotor_torque_constants: torch.Tensor     # (B, 4) rotor drag torque = constant * thrust [m]
    rotor_time_constants_rising: torch.Tensor   # (B, 4) [s]
    rotor_time_constants_falling: torch.Tensor  # (B, 4) [s]
    mass: torch.Tensor                       # (B,) [kg]
    gravity: torch.Tensor                    # (B, 3) [m/s^2], world frame (z up)
    J: torch.Tensor                          # (B, 3, 3) inertia [kg m^2]
    J_inv: torch.Tensor                      # (B, 3, 3)
    hovering_throttle_relative: torch.Tensor  # (B,)
    action_limit: "ActionLimit"


@dataclass
class ActionLimit(TensorTree):
    min: torch.Tensor  # (B,) rotor speed at action -1
    max: torch.Tensor  # (B,) rotor speed at action +1


@dataclass
class Integration(TensorTree):
    dt: torch.Tensor  # (B,) [s]


@dataclass
class Init(TensorTree):
    guidance: torch.Tensor              # probability of starting exactly at rest at the target
    max_position: torch.Tensor          # position ~ U(-max, max) per axis [m]
    max_angle: torch.Tensor             # > 0 enables a random orientation (see `sample_initial_state`)
    max_linear_velocity: torch.Tensor   # [m/s]
    max_angular_velocity: torch.Tensor  # [rad/s]
    relative_rpm: torch.Tensor          # bool: min_rpm / max_rpm are in [-1, 1] action units
    min_rpm: torch.Tensor
    max_rpm: torch.Tensor


@dataclass
class Reward(TensorTree):
    non_negative: torch.Tensor  # bool
    scale: torch.Tensor
    constant: torch.Tensor
    termination_penalty: torch.Tensor
    position: torch.Tensor
    position_clip: torch.Tensor
    orientation: torch.Tensor
    linear_velocity: torch.Tensor
    angular_velocity: torch.Tensor
    linear_acceleration: torch.Tensor
    angular_acceleration: torch.Tensor
    action: torch.Tensor
    d_action: torch.Tensor
    position_error_integral: torch.Tensor


@dataclass
class ObservationNoise(TensorTree):
    position: torch.Tensor
    orientation: torch.Tensor
    linear_velocity: torch.Tensor
    angular_velocity: torch.Tensor
    imu_acceleration: torch.Tensor


@dataclass
class ActionNoise(TensorTree):
    normalized_rpm: torch.Tensor  # std of Gaussian noise added to the [-1, 1] action before clamping


@dataclass
class Termination(TensorTree):
    enabled: torch.Tensor  # bool
    position_threshold: torch.Tensor
    linear_velocity_threshold: torch.Tensor
    angular_velocity_threshold: torch.Tensor
    position_integral_threshold: torch.Tensor
    orientation_integral_threshold: torch.Tensor


@dataclass
class MDP(TensorTree):
    init: Init
    reward: Reward
    observation_noise: ObservationNoise
    action_noise: ActionNoise
    termination: Termination


@dataclass
class UnivariateGaussian(TensorTree):
    mean: torch.Tensor
    std: torch.Tensor


@dataclass
class Disturbances(TensorTree):
    random_force: UnivariateGaussian   # per-axis force [N] in the world frame, drawn once per episode
    random_torque: UnivariateGaussian  # per-axis torque [N m] in the body frame (z-axis std / 100)


@dataclass
class DomainRandomization(TensorTree):
    thrust_to_weight_min: torch.Tensor
    thrust_to_weight_max: torch.Tensor
    torque_to_inertia_min: torch.Tensor
    torque_to_inertia_max: torch.Tensor
    mass_min: torch.Tensor
    mass_max: torch.Tensor
    mass_size_deviation: torch.Tensor
    rotor_time_constant_rising_min: torch.Tensor
    rotor_time_constant_rising_max: torch.Tensor
    rotor_time_constant_falling_min: torch.Tensor
    rotor_time_constant_falling_max: torch.Tensor
    rotor_torque_constant_min: torch.Tensor
    rotor_torque_constant_max: torch.Tensor
    orientation_offset_angle_max: torch.Tensor
    disturbance_force_max: torch.Tensor


@dataclass
class Langevin(TensorTree):
    gamma: torch.Tensor
    omega: torch.Tensor
    sigma: torch.Tensor
    alpha: torch.Tensor


@dataclass
class Trajectory(TensorTree):
    mixture: torch.Tensor  # (B, 2): weights of [position, langevin] reference trajectories
    langevin: Langevin


_SUBTREES = {
    (Dynamics, "action_limit"): ActionLimit,
    (MDP, "init"): Init,
    (MDP, "reward"): Reward,
    (MDP, "observation_noise"): ObservationNoise,
    (MDP, "action_noise"): ActionNoise,
    (MDP, "termination"): Termination,
    (Disturbances, "random_force"): UnivariateGaussian,
    (Disturbances, "random_torque"): UnivariateGaussian,
    (Trajectory, "langevin"): Langevin,
}


# RAPTOR's MDP (rl-tools src/foundation_policy: l2f default parameter factory with the reward that
# pre_training/sample_dynamics_parameters.cpp writes into every dynamics file).
RAPTOR_MDP = {
    "init": {  # l2f parameters::init::init_90_deg
        "guidance": 0.1, "max_position": 0.5, "max_angle": math.pi / 2, "max_linear_velocity": 1.0,
        "max_angular_velocity": 1.0, "relative_rpm": True, "min_rpm": -1.0, "max_rpm": 0.0,
    },
    "reward": {
        "non_negative": False, "scale": 1.0, "constant": 1.5, "termination_penalty": -100.0, "position": 1.0,
        "position_clip": 0.0, "orientation": 0.1, "linear_velocity": 0.0, "angular_velocity": 0.0,
        "linear_acceleration": 0.0, "angular_acceleration": 0.0, "action": 0.0, "d_action": 1.0,
        "position_error_integral": 0.0,
    },
    "observation_noise": {"position": 0.0, "orientation": 0.0, "linear_velocity": 0.0, "angular_velocity": 0.0,
                          "imu_acceleration": 0.0},
    "action_noise": {"normalized_rpm": 0.0},
    "termination": {
        "enabled": True, "position_threshold": 1.0, "linear_velocity_threshold": 2.0,
        "angular_velocity_threshold": 35.0, "position_integral_threshold": 10000.0,
        "orientation_integral_threshold": 50000.0,
    },
}
NO_DISTURBANCES = {"random_force": {"mean": 0.0, "std": 0.0}, "random_torque": {"mean": 0.0, "std": 0.0}}
DOMAIN_RANDOMIZATION_DISABLED = {f.name: 0.0 for f in dataclasses.fields(DomainRandomization)}
POINT_TRAJECTORY = {"mixture": [1.0, 0.0], "langevin": {"gamma": 1.0, "omega": 2.0, "sigma": 0.5, "alpha": 0.01}}
DEFAULT_DT = 0.01  # 100 Hz


@dataclass
class Params(TensorTree):
    """A batch of l2f parameter sets; see the module docstring for the layout."""

    dynamics: Dynamics
    integration: Integration
    mdp: MDP
    disturbances: Disturbances
    domain_randomization: DomainRandomization
    trajectory: Trajectory

    # --- construction -------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: dict, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
                  validate: bool = True) -> "Params":
        """One parameter set from l2f's JSON structure (as a dict). `dynamics` is required; missing top-level
        sections take RAPTOR's defaults (`integration.dt` 0.01 s, `RAPTOR_MDP`, no disturbances, DR disabled)."""
        if "dynamics" not in values:
            raise KeyError("l2f parameters need a 'dynamics' section")
        full = {
            "dynamics": values["dynamics"],
            "integration": values.get("integration", {"dt": DEFAULT_DT}),
            "mdp": values.get("mdp", RAPTOR_MDP),
            "disturbances": values.get("disturbances", NO_DISTURBANCES),
            "domain_randomization": values.get("domain_randomization", DOMAIN_RANDOMIZATION_DISABLED),
            "trajectory": {k: v for k, v in values.get("trajectory", POINT_TRAJECTORY).items() if k != "MIXTURE_N"},
        }
        subtrees = {"dynamics": Dynamics, "integration": Integration, "mdp": MDP, "disturbances": Disturbances,
                    "domain_randomization": DomainRandomization, "trajectory": Trajectory}
        params = cls(**{name: _from_dict(sub, full[name], dtype, device) for name, sub in subtrees.items()})
        if validate:
            params.validate()
        return params

    @classmethod
    def from_l2f_json(cls, text: str | bytes | dict, dtype: torch.dtype = torch.float32,
                      device: torch.device | str | None = None, validate: bool = True) -> "Params":
        """Parse one parameter set written by l2f's `parameters_to_json` (a JSON string or the parsed dict).

        Values are read as float64 and rounded to `dtype`, as l2f rounds its JSON doubles to float."""
        values = json.loads(text) if isinstance(text, (str, bytes)) else text
        return cls.from_dict(values, dtype=dtype, device=device, validate=validate)

    @classmethod
    def stack(cls, params: Sequence["Params"]) -> "Params":
        """Concatenate parameter batches (e.g. single sets) into one batch."""
        return cls.cat(params)

    # --- JSON ---------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The parameters of a batch of one as l2f's nested JSON structure (python floats / bools)."""
        if self.batch_size != 1:
            raise ValueError(f"to_dict/to_l2f_json need a batch of one, got {self.batch_size}; index first: params[i]")

        def convert(tree: TensorTree) -> dict:
            out = {}
            for f in dataclasses.fields(tree):
                value = getattr(tree, f.name)
                out[f.name] = convert(value) if isinstance(value, TensorTree) else value[0].tolist()
            return out

        values = convert(self)
        traj = values["trajectory"]
        values["trajectory"] = {"MIXTURE_N": len(traj["mixture"]), "mixture": traj["mixture"], "langevin": traj["langevin"]}
        return values

    def to_l2f_json(self, float_format: str = "exact") -> str:
        """This parameter set (batch of one) as JSON with exactly l2f's keys, nesting and separators.

        float_format: "exact" writes each value's shortest round-trip decimal (lossless);
                      "l2f" writes `%f` (6 decimals) like l2f's `std::to_string`, byte-identical to l2f.
        """
        if float_format not in ("exact", "l2f"):
            raise ValueError(f"float_format must be 'exact' or 'l2f', got {float_format!r}")

        def number(x: float) -> str:
            if not math.isfinite(x):
                raise ValueError(f"cannot write non-finite value {x} to l2f JSON")
            return ("%f" % x) if float_format == "l2f" else repr(float(x))

        def dump(value) -> str:
            if isinstance(value, bool):
                return "true" if value else "false"
            if isinstance(value, int):
                return str(value)
            if isinstance(value, float):
                return number(value)
            if isinstance(value, list):
                return "[" + ", ".join(dump(v) for v in value) + "]"
            if isinstance(value, dict):
                return "{" + ", ".join(f'"{k}": {dump(v)}' for k, v in value.items()) + "}"
            raise TypeError(f"unexpected value {value!r}")

        return dump(self.to_dict())

    # --- checks -------------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise `ValueError` naming the first problem: non-positive/non-finite mass, singular or non-finite
        inertia, non-finite J_inv, non-positive dt or motor time constants, or an empty action range."""
        flags, messages = parameter_problems(self)
        bad = flags.any(dim=1).tolist()  # one host sync for all checks
        for k, (problem, is_bad) in enumerate(zip(messages, bad)):
            if is_bad:
                rows = flags[k].nonzero()[:, 0].tolist()
                raise ValueError(f"invalid l2f parameters: {problem} (batch rows {rows[:10]})")


def parameter_problems(params: Params) -> tuple[torch.Tensor, list[str]]:
    """`(flags, messages)`: `flags[k, b]` is True where parameter set `b` has problem `messages[k]`.

    Inertia counts as singular when it is not finite or its Hadamard ratio |det J| / prod(row norms)
    is below 1e-6 (scale-free: 1 for any diagonal J, 0 for a singular one)."""
    d = params.dynamics
    J = d.J.to(torch.float64)
    row_norms = torch.linalg.vector_norm(J, dim=-1).prod(dim=-1)
    hadamard_ratio = torch.linalg.det(J).abs() / torch.where(row_norms > 0, row_norms, torch.ones_like(row_norms))
    singular = ~torch.isfinite(J).all(dim=(-1, -2)) | (row_norms == 0) | ~(hadamard_ratio >= 1e-6)
    checks = [
        (~(d.mass > 0) | ~torch.isfinite(d.mass), "mass must be positive and finite"),
        (singular, "inertia J is singular (or not finite)"),
        (~torch.isfinite(d.J_inv).all(dim=(-1, -2)), "inverse inertia J_inv is not finite"),
        (~(params.integration.dt > 0), "integration dt must be positive"),
        (~(d.rotor_time_constants_rising > 0).all(-1) | ~(d.rotor_time_constants_falling > 0).all(-1),
         "rotor time constants must be positive"),
        (~(d.action_limit.max > d.action_limit.min), "action_limit.max must exceed action_limit.min"),
    ]
    return torch.stack([c for c, _ in checks]), [m for _, m in checks]
