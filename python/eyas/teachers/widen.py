"""Start a teacher on a wider observation from one trained on its first columns (the "privileged" group begins with
the "teacher" group): the new inputs enter with zero weights, so the widened network acts exactly as the old one
until training moves them; their normaliser starts at mean 0, variance 1 (the task rows are O(1) already)."""
from __future__ import annotations

import torch

NORMALISER = ("obs_normalizer._mean", "obs_normalizer._var", "obs_normalizer._std")
FIRST_LAYER = "mlp.0.weight"


def widen_model(state: dict, width: int) -> dict:
    """An rsl_rl MLPModel state dict (actor or critic) taking ``width`` observations instead of its own (fewer)."""
    old = state[FIRST_LAYER].shape[1]
    if width < old:
        raise ValueError(f"cannot narrow a network from {old} to {width} observations")
    if width == old:
        return dict(state)
    out = dict(state)
    weight = state[FIRST_LAYER]
    out[FIRST_LAYER] = torch.cat([weight, weight.new_zeros(weight.shape[0], width - old)], 1)
    fill = {"obs_normalizer._mean": 0.0, "obs_normalizer._var": 1.0, "obs_normalizer._std": 1.0}
    for key in NORMALISER:
        if key in state:
            value = state[key]
            out[key] = torch.cat([value, value.new_full((*value.shape[:-1], width - old), fill[key])], -1)
    return out


def widen_checkpoint(saved: dict, width: int) -> dict:
    """An rsl_rl checkpoint (``actor_state_dict``, ``critic_state_dict``, ...) with both networks widened."""
    return saved | {key: widen_model(saved[key], width) for key in ("actor_state_dict", "critic_state_dict")
                    if key in saved}
