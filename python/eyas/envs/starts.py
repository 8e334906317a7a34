"""Where the env's episodes come from: `StartSource` draws episode starts (`eyas.envs.step.EpisodeStarts`) from the
env's generator: initial states (l2f `sample_initial_state`), tasks (`eyas.envs.scenario.sample_tasks`, the wind
in the state's force) and, for randomised dynamics, parameters (RAPTOR's randomisation) drawn in batches into a
reservoir that later episodes take from in order. The env holds one, and draws every row's next start ahead."""
from __future__ import annotations

import dataclasses

import torch

from eyas import sim
from eyas.sim import Params, fused
from eyas.sim.fused import PARAMS

from .config import PointControlEnvCfg, env_dtype
from .features import dynamics_features
from .scenario import TASK, sample_tasks
from .step import EpisodeStarts, normalized_rotor_speeds

RESERVOIR = 16384  # randomised episode starts drawn per batch, at least (a draw costs ~200 eager ops)


def apply_mdp_cfg(cfg: PointControlEnvCfg, params: Params) -> None:
    """Write the configured MDP values (init, termination, reward, noise) into ``params`` in place."""
    mdp = params.mdp

    def put(tree, name, value):
        if value is not None:
            setattr(tree, name, torch.full_like(getattr(tree, name), value))

    for section, values in (("init", cfg.init), ("termination", cfg.termination), ("reward", cfg.reward),
                            ("observation_noise", cfg.observation_noise)):
        for name, value in dataclasses.asdict(values).items():
            put(getattr(mdp, section), name, value)
    put(mdp.action_noise, "normalized_rpm", cfg.action_noise)


class StartSource:
    """Episode starts for an env of ``cfg`` (``fixed``: the rows' own parameters, None for randomised dynamics),
    drawn from ``generator``; ``weak_motors``: the features follow the drawn motor scales."""

    def __init__(self, cfg: PointControlEnvCfg, fixed: Params | None, generator: torch.Generator, device,
                 weak_motors: bool):
        self.cfg, self.fixed, self.generator, self.device = cfg, fixed, generator, device
        self.dtype, self.weak_motors = env_dtype(cfg.dtype), weak_motors
        self.nominal = sim.model_params("crazyflie", torch.float64, device)  # l2f's nominal model for DR
        self.reservoir, self.used = None, 0

    def new_params(self, count: int) -> Params:
        params = sim.sample_domain_randomized_params(count, self.generator, self.cfg.domain_randomization,
                                                     nominal=self.nominal, dtype=self.dtype, device=self.device,
                                                     validate=False)
        apply_mdp_cfg(self.cfg, params)
        return params

    def draw(self, params: Params, P: torch.Tensor | None = None) -> EpisodeStarts:
        """Starts for episodes with these parameters (``P``: them packed, when the caller holds them so); the
        parameters themselves are kept for randomised dynamics only (fixed ones stay in their rows)."""
        state = sim.sample_initial_state(params, self.generator)
        T, wind = sample_tasks(self.cfg.scenario, params, self.generator)
        if wind is not None:
            state.force = state.force + wind
        starts = EpisodeStarts.empty(params.batch_size, self.fixed is None, self.dtype, self.device)
        X = fused.pack_state(state, self.dtype, out=starts.X)
        if P is None:
            P = PARAMS.pack(params, self.dtype, out=starts.P)
        elif starts.has_params:
            starts.P.copy_(P)
        starts.T.copy_(T)
        torch.stack(normalized_rotor_speeds(tuple(X.unbind(0)), P), out=starts.rotor_speeds)
        scale = T[TASK.MOTOR_SCALE].T if self.weak_motors else None
        starts.features.copy_(dynamics_features(params, state, scale).T)
        return starts

    def take(self, count: int, P: torch.Tensor) -> EpisodeStarts:
        """The next ``count`` starts: new draws on the rows' own parameters ``P`` (fixed dynamics), or the next
        unused ones of the reservoir of randomised starts, refilled in batches (the old one's last starts first)."""
        if self.fixed is not None:
            return self.draw(PARAMS.unpack(P), P)
        if self.reservoir is None or self.used + count > len(self.reservoir):
            rest = None if self.reservoir is None else self.reservoir.columns(slice(self.used, None))
            self.reservoir, self.used = self.draw(self.new_params(max(4 * self.cfg.num_envs, RESERVOIR))), 0
            if rest is not None and len(rest):
                self.used = count - len(rest)
                return rest.cat(self.reservoir.columns(slice(0, self.used)))
        taken = self.reservoir.columns(slice(self.used, self.used + count))
        self.used += count
        return taken

    def left(self) -> EpisodeStarts | None:
        """The reservoir's unused starts (what a saved env keeps)."""
        return None if self.reservoir is None else self.reservoir.columns(slice(self.used, None))
