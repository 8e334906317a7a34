"""RAPTOR's evaluation protocol as scorecard cases: what each case flies, on which dynamics, and what it reports.

A `Case` is a set of `Group`s flown in one batched env (one episode per row, ``episodes`` rows per group); a group
is a dynamics source (RAPTOR's randomisation, a registry model, a hold-out platform, or a user's l2f JSON) and the
scenario its episodes draw (`eyas.envs.scenario.ScenarioCfg`). Every policy flies a case from the same seeds:
the same dynamics, initial states, tasks (references, delays, winds, gusts, weak motors) and noise draws.

| case | why it exists | groups | headline |
|---|---|---|---|
| hover | RAPTOR's own task: fly to and hold the origin | randomised, each registry model | final error |
| holdout | platforms no training flies (`eyas.scorecard.platforms`) | the hold-out set, `--dynamics` files | final error |
| track_10s, track_5s | PX4 `mc_raptor intref lissajous 0.5 1 0 2 1 1 D 3`, D = 10 s and 5 s | randomised, models | RMS error after the ramp |
| delay_Nms | the command reaches the rotors N ms late (N = 0, 5, 10, 20): ESCs, filters, estimators | randomised, crazyflie, x500 | final error |
| wind | a constant horizontal force of 0.15 m g | randomised, crazyflie, x500 | final offset |
| gust | a 0.3 m g horizontal force switched on at 2 s | randomised, crazyflie, x500 | final offset |
| weak_motor | one rotor at 80 % thrust, each rotor in turn (Crazyflie), a random rotor at 70-90 % | crazyflie r0..r3, randomised | final error |
| noise_Nx | observation noise N x (1 cm, 0.01, 2 cm/s, 0.05 rad/s), N = 1, 2, 4 | randomised, crazyflie | final error |

Every case reports per group and policy: terminated share (Wilson 95 % interval), final position error (mean |p -
p_ref| over the last second of the episodes not terminated, 95 % interval), settling time (the time after which the
error stays within 10 cm), and for tracking the RMS error after the ramp.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from eyas.envs.config import BASE_NOISE, ObservationNoiseCfg
from eyas.envs.scenario import ScenarioCfg
from eyas.sim import MODEL_NAMES

from .platforms import HOLDOUT_NAMES

RANDOMIZED = "randomized"


@dataclass(frozen=True)
class Group:
    label: str
    dynamics: str  # "randomized", a registry model, a hold-out platform or an l2f JSON path
    scenario: ScenarioCfg = field(default_factory=ScenarioCfg)


@dataclass(frozen=True)
class Case:
    name: str
    groups: tuple[Group, ...]
    headline: str = "final"  # "final": final position error; "rms": tracking RMS after the ramp
    max_episode_length: int = 500
    rms_from: int = 0  # steps: the ramp of a reference
    noise: ObservationNoiseCfg = field(default_factory=ObservationNoiseCfg)

    def label(self, group: Group) -> str:
        return f"{self.name}/{group.label}"


def _groups(names, scenario: ScenarioCfg = ScenarioCfg()) -> tuple[Group, ...]:
    return tuple(Group(name, name, scenario) for name in names)


def tracking(duration: float, ramp: float = 3.0) -> Case:
    """PX4's `intref lissajous 0.5 1 0 2 1 1 duration ramp`: one period after the ramp, RMS error after it."""
    scenario = ScenarioCfg(reference_share=1.0, reference_duration=(duration, duration), reference_ramp=ramp)
    steps = round((ramp + duration) * 100)
    return Case(f"track_{duration:g}s", _groups((RANDOMIZED, *MODEL_NAMES), scenario), headline="rms",
                max_episode_length=steps, rms_from=round(ramp * 100))


def default_cases(extra_dynamics: tuple[str, ...] = ()) -> dict[str, Case]:
    """The full scorecard (module docstring), ``extra_dynamics`` (l2f JSON paths) joining the hold-out case."""
    few = (RANDOMIZED, "crazyflie", "x500")
    cases = [Case("hover", _groups((RANDOMIZED, *MODEL_NAMES))),
             Case("holdout", _groups(HOLDOUT_NAMES) + tuple(Group(path, path) for path in extra_dynamics)),
             tracking(10.0), tracking(5.0)]
    cases += [Case(f"delay_{ms}ms", _groups(few, ScenarioCfg(delay_ms=(float(ms), float(ms))))) for ms in (0, 5, 10, 20)]
    cases += [Case("wind", _groups(few, ScenarioCfg(wind=(0.15, 0.15)))),
              Case("gust", _groups(few, ScenarioCfg(gust_share=1.0, gust=(0.3, 0.3), gust_time=(2.0, 2.0))))]
    weak = [Group(f"crazyflie_r{r}", "crazyflie", ScenarioCfg(weak_motor_share=1.0, weak_motor_rotor=r,
                                                              weak_motor_scale=(0.8, 0.8))) for r in range(4)]
    weak.append(Group(RANDOMIZED, RANDOMIZED, ScenarioCfg(weak_motor_share=1.0, weak_motor_scale=(0.7, 0.9))))
    cases.append(Case("weak_motor", tuple(weak)))
    for level in (1, 2, 4):
        noise = ObservationNoiseCfg(**{k: level * v for k, v in dataclasses.asdict(BASE_NOISE).items()})
        cases.append(Case(f"noise_{level}x", _groups((RANDOMIZED, "crazyflie")), noise=noise))
    return {case.name: case for case in cases}


CASE_NAMES = tuple(default_cases())
