"""The settings of `eyas.envs.PointControlEnv`: RAPTOR's MDP by default (l2f names; see that module's docstring)."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch

from eyas import sim
from eyas.sim import Params

from .backend import Capabilities
from .scenario import MIXED, ROBUST, SMOOTH, ScenarioCfg


@dataclass
class InitCfg:
    """Initial-state distribution (l2f `Initialization`); None keeps each parameter set's own value."""

    guidance: float | None = 0.1
    max_position: float | None = 0.5
    max_angle: float | None = math.pi / 2  # > 0 enables random orientations (angle ~ U(0, 1 rad), as l2f)
    max_linear_velocity: float | None = 1.0
    max_angular_velocity: float | None = 1.0
    relative_rpm: bool | None = True
    min_rpm: float | None = -1.0
    max_rpm: float | None = 0.0


@dataclass
class TerminationCfg:
    """Termination thresholds (l2f `Termination`); None keeps each parameter set's own value
    (position: 1 m for registry models, 20 x the largest rotor distance for randomised dynamics)."""

    enabled: bool | None = True
    position_threshold: float | None = None
    linear_velocity_threshold: float | None = 2.0
    angular_velocity_threshold: float | None = 35.0


@dataclass
class RewardCfg:
    """Reward weights (l2f `Squared`; RAPTOR's values)."""

    non_negative: bool = False
    scale: float = 1.0
    constant: float = 1.5
    termination_penalty: float = -100.0
    position: float = 1.0
    position_clip: float = 0.0
    orientation: float = 0.1
    linear_velocity: float = 0.0
    angular_velocity: float = 0.0
    linear_acceleration: float = 0.0
    angular_acceleration: float = 0.0
    action: float = 0.0
    d_action: float = 1.0


@dataclass
class ObservationNoiseCfg:
    """Standard deviations of additive Gaussian noise on the policy observation (l2f `ObservationNoise`)."""

    position: float = 0.0
    orientation: float = 0.0  # added to each rotation-matrix entry
    linear_velocity: float = 0.0
    angular_velocity: float = 0.0


# the scorecard's base observation noise (its 1x level): position, rotation entries, velocity, body rates
BASE_NOISE = ObservationNoiseCfg(position=0.01, orientation=0.01, linear_velocity=0.02, angular_velocity=0.05)
# what an env's MDP is (the rest of a config says how many rows run where): what a teacher records and distils with
MDP_FIELDS = ("max_episode_length", "domain_randomization", "init", "termination", "reward", "observation_noise",
              "action_noise", "action_history_length", "scenario")
# named MDPs: RAPTOR's (hover to a point, undisturbed), the robust one the scorecard asks for, and the mixes APG's
# flights use (half RAPTOR's, half disturbed; `eyas.envs.scenario.MIXED`, `SMOOTH`)
PRESETS = {"raptor": {}, "robust": {"scenario": ROBUST, "observation_noise": BASE_NOISE}, "mixed": {"scenario": MIXED},
           "smooth": {"scenario": SMOOTH}}


@dataclass
class PointControlEnvCfg:
    num_envs: int = 4096
    device: str = "cpu"
    dtype: str = "float32"
    seed: int = 0
    max_episode_length: int = 500
    dynamics: str | Params = "randomized"  # "randomized", a registry model name, or a Params batch
    domain_randomization: sim.DomainRandomizationRanges = field(default_factory=sim.DomainRandomizationRanges)
    init: InitCfg = field(default_factory=InitCfg)
    termination: TerminationCfg = field(default_factory=TerminationCfg)
    reward: RewardCfg = field(default_factory=RewardCfg)
    observation_noise: ObservationNoiseCfg = field(default_factory=ObservationNoiseCfg)
    action_noise: float = 0.0  # std of Gaussian noise added to actions before clamping (l2f normalized_rpm)
    action_history_length: int = 1
    scenario: ScenarioCfg = field(default_factory=ScenarioCfg)  # references, delay, wind, gusts, weak motors, noise
    privileged: bool = False  # add the "privileged" observation group (teacher rows + task rows)
    validate_actions: bool = True  # raise ValueError on NaN/inf actions (one host sync per step)
    compile: bool | None = None  # the step compiled by torch.compile (None: EYAS_COMPILE, default on; `eyas.compilation`)

    @classmethod
    def from_dict(cls, values: dict | None, **overrides) -> "PointControlEnvCfg":
        """A config from a (possibly partial) `to_dict()` (unknown keys ignored; the dynamics are not read back: a
        teacher's file keeps them apart), with ``overrides`` applied."""
        parts = {"init": InitCfg, "termination": TerminationCfg, "reward": RewardCfg,
                 "observation_noise": ObservationNoiseCfg, "scenario": ScenarioCfg,
                 "domain_randomization": sim.DomainRandomizationRanges}
        kwargs = {}
        for f in dataclasses.fields(cls):
            if values is None or f.name not in values or f.name == "dynamics":
                continue
            value = values[f.name]
            if f.name in parts:
                known = {g.name for g in dataclasses.fields(parts[f.name])}
                value = parts[f.name](**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()
                                         if k in known})
            kwargs[f.name] = value
        return dataclasses.replace(cls(), **(kwargs | overrides))

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities("embedded", differentiable=True, fixed_dynamics=True, l2f_observation=True, has_mdp=True)

    def with_mdp(self, source: "PointControlEnvCfg | str") -> "PointControlEnvCfg":
        """This config with the MDP (`MDP_FIELDS`) of another config, or of a preset (`PRESETS`) on RAPTOR's."""
        if isinstance(source, str):
            if source not in PRESETS:
                raise ValueError(f"unknown env preset {source!r}; presets: {', '.join(PRESETS)}")
            source = dataclasses.replace(PointControlEnvCfg(), **PRESETS[source])
        return dataclasses.replace(self, **{name: getattr(source, name) for name in MDP_FIELDS})

    def to_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value) and not isinstance(value, Params):
                value = dataclasses.asdict(value)
            elif isinstance(value, Params):
                value = f"Params(batch_size={value.batch_size})"
            out[f.name] = value
        return out


def env_dtype(name: str | torch.dtype) -> torch.dtype:
    """The torch dtype a config names (float32 or float64)."""
    if isinstance(name, torch.dtype):
        return name
    if name not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {name!r}")
    return getattr(torch, name)
