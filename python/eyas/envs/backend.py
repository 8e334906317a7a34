"""What an env backend can do, asked instead of asking which backend it is: the distillation runner, its phases and
its report read `Capabilities` from the env they are given (`capabilities(env_cfg)`).

| backend | differentiable | fixed dynamics | l2f observation | MDP |
|---|---|---|---|---|
| the embedded l2f env (`PointControlEnvCfg`) | yes | yes | yes | the run's (`--env`) |
| an Isaac Lab task (`IsaacLabTask`) | no | no | no | the task's own |
"""
from __future__ import annotations

from typing import NamedTuple


class Capabilities(NamedTuple):
    name: str  # "embedded" or "isaaclab": what summaries and exported actors name
    differentiable: bool  # its step has gradients: APG fine-tuning flies it
    fixed_dynamics: bool  # rows fly given dynamics: per-dynamics teachers, registry models, held-out parameter
    #                       sets, the teachers' steady-state offsets, the scorecard
    l2f_observation: bool  # RAPTOR's 22-D observation: RAPTOR flies it beside the student, flights are recorded
    has_mdp: bool  # its MDP is a setting (`--env`: presets, the teacher's); a task carries its own


def capabilities(env_cfg) -> Capabilities:
    """The capabilities of a run's env (an object with ``capabilities``: `PointControlEnvCfg`, `IsaacLabTask`)."""
    return env_cfg.capabilities
