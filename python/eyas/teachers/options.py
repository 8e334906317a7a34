"""What a teacher's training is set to: rsl_rl's runner configuration (`default_train_cfg`) and the run-level
options (`TrainOptions`), apart from the training code so that what reads them (the monitor, the CLI) imports
no training."""
from __future__ import annotations

from dataclasses import dataclass, field


def default_train_cfg() -> dict:
    """rsl_rl (5.x) runner config for a point-control teacher."""
    return {
        "num_steps_per_env": 32,
        "save_interval": 100,
        "obs_groups": {"actor": ["teacher"], "critic": ["teacher"]},
        "algorithm": {
            "class_name": "PPO",
            "num_learning_epochs": 5,
            "num_mini_batches": 4,
            "clip_param": 0.2,
            "gamma": 0.99,
            "lam": 0.95,
            "value_loss_coef": 1.0,
            "entropy_coef": 0.0,
            "learning_rate": 1e-3,
            "max_grad_norm": 1.0,
            "schedule": "adaptive",
            "desired_kl": 0.01,
            # returns here are O(100) (1.5 per step, -100 on termination): PPO's clipped value loss (+-0.2 per
            # update) would make the critic far too slow to follow them
            "use_clipped_value_loss": False,
        },
        "actor": {
            "class_name": "MLPModel",
            "hidden_dims": [64, 64],
            "activation": "elu",
            "obs_normalization": True,
            # small initial noise: with std 0.5 the d_action cost makes every step's reward negative, and
            # crashing early (-100) beats surviving; the floor keeps PPO exploring (without it the std collapses
            # to ~0.01 and the policy drifts)
            "distribution_cfg": {"class_name": "GaussianDistribution", "init_std": 0.15, "std_type": "log",
                                 "std_range": [0.05, 10.0]},
        },
        "critic": {"class_name": "MLPModel", "hidden_dims": [128, 128], "activation": "elu", "obs_normalization": True},
        "logger": "tensorboard",
        "check_for_nan": True,
    }


@dataclass
class TrainOptions:
    """Run-level options (the PPO hyper-parameters live in the rsl_rl config)."""

    num_envs: int = 1024
    max_iterations: int = 1000
    max_minutes: float | None = 15.0  # budget of rsl_rl collection + learning time (evaluations not counted)
    seed: int = 0
    device: str = "cpu"
    eval_interval: int = 25  # iterations between deterministic evaluations (0: only at the end)
    eval_envs: int = 512  # one episode per env during training
    final_eval_episodes: int = 1024
    stop_when_solved: bool = False
    solved_terminated: float = 0.01
    solved_position_error: float = 0.05
    quiet: bool = True  # replace rsl_rl's per-iteration report with a progress bar
    hover_init: bool = True  # start the actor near the hover command (output bias) with small output weights
    select: str = "best"  # teacher checkpoint: "best" deterministic eval return seen during training, or "last"
    init_checkpoint: str | None = None  # continue from this rsl_rl checkpoint (actor, critic, iteration; fresh optimizer)
    obs_group: str = "teacher"  # the env's group the teacher reads: "teacher", or "privileged" (with the task rows)
    train_cfg: dict = field(default_factory=default_train_cfg)
    env_overrides: dict = field(default_factory=dict)
