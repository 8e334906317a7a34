"""What a distillation run is (`RunSetup`): its settings and what they resolved to (device, env with the run's MDP,
teachers, the student's widths), fixed from the run's start to its end; the phases and the report read it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from eyas.distill import checkpoint
from eyas.distill.config import DistillConfig
from eyas.distill.distributed import World
from eyas.distill.evaluation import Evaluator, TaskEvaluator
from eyas.envs.backend import Capabilities
from eyas.model import StudentPolicy
from eyas.teachers import TeacherBank


@dataclass(frozen=True)
class RunSetup:
    cfg: DistillConfig
    log_dir: Path
    device: torch.device
    env_cfg: Any  # `PointControlEnvCfg` (the embedded env, with the run's MDP) or an `IsaacLabTask`
    caps: Capabilities  # what the env can do (`eyas.envs.backend`)
    bank: TeacherBank
    num_obs: int
    num_actions: int
    max_episode_length: int
    eval_models: list[str]
    world: World
    init_weights: dict | None = None  # --init_student

    def new_student(self, weights: dict | None = None) -> StudentPolicy:
        """A student as rl-tools initialises it (seeded), or with ``weights`` (default: ``--init_student``'s)."""
        g = torch.Generator().manual_seed(self.cfg.seed)
        student = StudentPolicy(self.num_obs, self.num_actions, self.cfg.training.hidden_dim,
                                gradient_mode=self.cfg.training.gradient_mode, generator=g)
        weights = weights if weights is not None else self.init_weights
        if weights is not None:
            student.load_state_dict(weights)
        return student.to(self.device)

    def evaluator(self, episodes: int, per_model: int, seed: int, world: World = World()):
        """A held-out evaluation (``world``: split over the ranks; by default this process flies all of it)."""
        if not self.caps.fixed_dynamics:  # new episodes of a task that draws its own dynamics
            return TaskEvaluator(self.env_cfg, episodes=episodes, world=world)
        return Evaluator(self.env_cfg, randomized=episodes, per_model=per_model, models=self.eval_models, seed=seed,
                         device=self.device, world=world)

    def save_actor(self, student: StudentPolicy, directory: Path, stem: str, meta: dict) -> None:
        """``directory/stem.h5`` and ``.pt`` (rank 0 alone writes)."""
        if self.world.is_main:
            checkpoint.save_actor(student, directory, stem, meta,
                                  checkpoint.actor_environment(self.caps, self.cfg.task))
