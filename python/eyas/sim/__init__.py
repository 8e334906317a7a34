"""Batched torch port of the l2f multirotor simulator (rl-tools `rl/environments/l2f`, l2f 2.0.18).

    from eyas.sim import Params, State, step, model_params, sample_domain_randomized_params
    params = model_params("crazyflie")                      # or Params.from_l2f_json(text)
    state = State.hover(params)
    state = step(state, torch.zeros(1, 4), params)          # one 10 ms RK4 step, actions in [-1, 1]
"""
from .dynamics import State, action_to_setpoint, check_inputs, quaternion_to_rotation_matrix, rotate_vector, step
from .params import RAPTOR_MDP, Params, parameter_problems
from .randomization import (
    RAPTOR_DOMAIN_RANDOMIZATION,
    DomainRandomizationRanges,
    sample_domain_randomized_params,
    sample_initial_state,
    thrust_to_weight_ratio,
)
from .registry import MODEL_NAMES, l2f_dynamics, model_params, raptor_dynamics

__all__ = [
    "MODEL_NAMES",
    "RAPTOR_DOMAIN_RANDOMIZATION",
    "RAPTOR_MDP",
    "DomainRandomizationRanges",
    "Params",
    "State",
    "action_to_setpoint",
    "check_inputs",
    "l2f_dynamics",
    "model_params",
    "parameter_problems",
    "quaternion_to_rotation_matrix",
    "raptor_dynamics",
    "rotate_vector",
    "sample_domain_randomized_params",
    "sample_initial_state",
    "step",
    "thrust_to_weight_ratio",
]
