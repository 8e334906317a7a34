#!/usr/bin/env python
"""Experiment (kept in git history only): PPO fine-tuning of a distilled student with rsl_rl.

The student (`eyas.StudentPolicy`, acting on the 22-D `policy` group) becomes a recurrent rsl_rl actor with a
Gaussian output; the critic is the privileged teacher's (74-D `teacher` group, weights from its checkpoint).
The critic is first fitted alone for `--warmup` iterations (actor frozen), then PPO runs with the adaptive
KL schedule. Every `--eval_every` iterations the deterministic student is flown on the same held-out episodes.

    python benchmarks/student_ppo_finetune.py runs/distill-long/best_actor.pt --minutes 14
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import time

import torch
from torch import nn
from rsl_rl.runners import OnPolicyRunner
from rsl_rl.utils import resolve_class, unpad_trajectories

from eyas import StudentPolicy
from eyas.envs.evaluation import evaluate, student_policy_fn
from eyas.envs.point_control import PointControlEnv, PointControlEnvCfg
from eyas.teachers.train import default_train_cfg


class StudentActor(nn.Module):
    """rsl_rl recurrent actor interface over `StudentPolicy` (hidden state returns to h0 at episode ends)."""

    is_recurrent = True

    def __init__(self, obs, obs_groups, obs_set, output_dim, distribution_cfg=None):
        super().__init__()
        self.obs_groups = obs_groups[obs_set]
        self.num_envs = obs.batch_size[0]
        self.student = StudentPolicy(sum(obs[g].shape[-1] for g in self.obs_groups), output_dim,
                                     gradient_mode="exact", validate_inputs=False)
        self.student.reset(batch_size=self.num_envs)
        dist_class, dist_cfg = resolve_class(distribution_cfg)
        self.distribution = dist_class(output_dim, **dist_cfg)

    def forward(self, obs, masks=None, hidden_state=None, stochastic_output=False):
        x = torch.cat([obs[g] for g in self.obs_groups], dim=-1)
        if masks is None:  # rollout: one step, the module keeps the state
            mean = self.student(x)
        else:  # update: padded trajectories from their saved start states
            mean = unpad_trajectories(self.student.act(x, hidden_states=hidden_state)[0], masks)
        if stochastic_output:
            self.distribution.update(mean)
            return self.distribution.sample()
        return mean

    def reset(self, dones=None, hidden_state=None):
        if dones is not None:
            self.student.reset(dones=dones)
        else:
            self.student.reset(batch_size=self.num_envs)

    def get_hidden_state(self):
        return self.student.hidden_states

    def detach_hidden_state(self, dones=None):
        self.student.detach_hidden_states()

    def update_normalization(self, obs):
        pass

    output_mean = property(lambda self: self.distribution.mean)
    output_std = property(lambda self: self.distribution.std)
    output_entropy = property(lambda self: self.distribution.entropy)
    output_distribution_params = property(lambda self: self.distribution.params)

    def get_output_log_prob(self, outputs):
        return self.distribution.log_prob(outputs)

    def get_kl_divergence(self, old, new):
        return self.distribution.kl_divergence(old, new)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("student", help="a distill run's best_actor.pt")
    p.add_argument("--teacher", default="fixtures/teachers/privileged/model_773.pt")
    p.add_argument("--out", default="runs/student_ppo")
    p.add_argument("--num_envs", type=int, default=1024)
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--std", type=float, default=0.05)
    p.add_argument("--min_std", type=float, default=0.02)
    p.add_argument("--desired_kl", type=float, default=0.01)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--minutes", type=float, default=12)
    p.add_argument("--eval_every", type=int, default=20)
    p.add_argument("--eval_episodes", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)

    env = PointControlEnv(PointControlEnvCfg(num_envs=a.num_envs, seed=a.seed, dynamics="randomized"))
    cfg = default_train_cfg()
    cfg["num_steps_per_env"] = a.steps
    cfg["obs_groups"] = {"actor": ["policy"], "critic": ["teacher"]}
    cfg["actor"] = {"class_name": StudentActor, "distribution_cfg": {
        "class_name": "GaussianDistribution", "init_std": a.std, "std_type": "log", "std_range": [a.min_std, 1.0]}}
    cfg["algorithm"].update(learning_rate=1e-3, schedule="fixed", desired_kl=a.desired_kl)  # critic warm-up
    with contextlib.redirect_stdout(io.StringIO()):
        runner = OnPolicyRunner(env, cfg, log_dir=a.out, device="cpu")
    alg = runner.alg
    alg.actor.student.load_state_dict(torch.load(a.student, weights_only=False)["state_dict"])
    alg.actor.student.reset(batch_size=a.num_envs)
    alg.critic.load_state_dict(torch.load(a.teacher, weights_only=False)["critic_state_dict"])

    start = time.time()

    def report(tag: str) -> None:
        eval_env = PointControlEnv(PointControlEnvCfg(num_envs=a.eval_episodes, seed=12345, dynamics="randomized"))
        r = evaluate(student_policy_fn(copy.deepcopy(alg.actor.student).eval()), eval_env, a.eval_episodes).summary()
        print(f"[{time.time() - start:6.0f} s] {tag}: held-out terminated {100 * r['share_terminated']:.1f} %, "
              f"return {r['mean_return']:.1f}", flush=True)

    report("start")
    for q in alg.actor.parameters():
        q.requires_grad_(False)
    with contextlib.redirect_stdout(io.StringIO()):
        runner.learn(a.warmup, init_at_random_ep_len=True)
    for q in alg.actor.parameters():
        q.requires_grad_(True)
    report(f"critic warm-up ({a.warmup} iterations)")
    alg.schedule, alg.learning_rate = "adaptive", a.lr
    for group in alg.optimizer.param_groups:
        group["lr"] = a.lr
    it = a.warmup
    while time.time() - start < 60 * a.minutes:
        with contextlib.redirect_stdout(io.StringIO()):
            runner.learn(a.eval_every)
        it += a.eval_every
        report(f"iteration {it} (α {alg.learning_rate:.1e}, std {alg.actor.distribution.std.mean():.3f})")


if __name__ == "__main__":
    main()
