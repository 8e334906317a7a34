#!/usr/bin/env python
"""Is a distilled student limited by optimisation or by what its teacher's labels can teach?

Takes an aggregating `eyas distill` run (`--on_policy false`: its `state.pt` holds the last dataset) and

1. reports the MSE to the teacher's labels on that dataset, in rl-tools' batches, of the run's last student, its best
   actor and a reference policy (default: the released RAPTOR policy, which flies the randomised env well);
2. keeps training the last student on the fixed dataset (`--passes` more passes, Adam state continued) and
   evaluates it on held-out randomised episodes every `--eval_every` passes.

If the loss stops falling while the share of terminated episodes stays put, the student sits at the imitation
floor of these labels; if the reference flies better with a much larger MSE, imitating these labels more closely
is not the way to fly better.

    python benchmarks/imitation_floor.py runs/distill-long [--reference foundation_policy] [--passes 60]
"""
from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch

from eyas import StudentPolicy, load_rltools_h5, raptor_checkpoint_path
from eyas.distill.dataset import EpisodeDataset
from eyas.distill.trainer import Distillation
from eyas.envs.evaluation import evaluate, student_policy_fn
from eyas.envs.point_control import PointControlEnv, PointControlEnvCfg


def mean_loss(trainer: Distillation, dataset: EpisodeDataset) -> float:
    """Mean rl-tools MSE over one unshuffled pass."""
    with torch.no_grad():
        losses = [float(trainer.loss(b)) for b in dataset.get_batches(trainer.batch_size, trainer.sequence_length, False)]
    return sum(losses) / len(losses)


def held_out(policy: StudentPolicy, episodes: int, seed: int) -> dict:
    env = PointControlEnv(PointControlEnvCfg(num_envs=episodes, seed=seed, dynamics="randomized"))
    return evaluate(student_policy_fn(copy.deepcopy(policy).eval()), env, episodes).summary()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="log directory of an aggregating `eyas distill` run (holds state.pt)")
    parser.add_argument("--reference", default="foundation_policy",
                        help="rl-tools .h5 policy to compare with (default: the released RAPTOR policy)")
    parser.add_argument("--passes", type=int, default=60)
    parser.add_argument("--eval_every", type=int, default=20)
    parser.add_argument("--learning_rate", type=float, default=None, help="default: the run's")
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    state = torch.load(Path(args.run) / "state.pt", weights_only=False, map_location="cpu")
    cfg, saved = state["config"], state["dataset"]
    if cfg["on_policy"]:
        raise SystemExit(f"{args.run}: an on-policy run keeps no dataset in state.pt; use an --on_policy false run")
    num_obs, num_actions = saved["observations"].shape[1], saved["targets"].shape[1]
    dataset = EpisodeDataset(saved["observations"].shape[0], num_obs, num_actions,
                             max_episodes=saved["episode_start"].shape[0])
    dataset.load_state_dict(saved)
    lr = args.learning_rate if args.learning_rate is not None else cfg["learning_rate"]

    def student(weights: dict) -> StudentPolicy:
        policy = StudentPolicy(num_obs, num_actions, cfg["hidden_dim"], gradient_mode=cfg["gradient_mode"])
        policy.load_state_dict(weights)
        return policy

    last = student(state["trainer"]["student"])
    trainer = Distillation(last, learning_rate=lr, batch_size=cfg["batch_size"],
                           sequence_length=cfg["sequence_length"])
    trainer.load_state_dict(state["trainer"])
    for group in trainer.optimizer.param_groups:
        group["lr"] = lr
    reference_path = raptor_checkpoint_path() if args.reference == "foundation_policy" else args.reference
    reference = load_rltools_h5(str(reference_path))
    print(f"dataset: {len(dataset)} steps, {dataset.num_episodes} episodes (epoch {state['epoch']} of {args.run})")
    print(f"MSE to the teacher's labels ({cfg['batch_size']} x {cfg['sequence_length']} batches):")
    print(f"  {'policy':<28} {'MSE':>9}  held-out terminated ({args.episodes} episodes, seed {args.seed})")
    for name, policy in (("last student", last), ("best actor", student(state["best"]["student"])),
                         (f"reference ({args.reference})", reference)):
        loss = mean_loss(Distillation(policy, batch_size=cfg["batch_size"], sequence_length=cfg["sequence_length"]),
                         dataset)
        flown = held_out(policy, args.episodes, args.seed)
        print(f"  {name:<28} {loss:9.5f}  {100 * flown['share_terminated']:.1f} %, return {flown['mean_return']:.1f}")

    print(f"\nmore passes over the fixed dataset (α {lr:g}):")
    generator = torch.Generator().manual_seed(0)
    start = time.time()
    for p in range(1, args.passes + 1):
        loss = trainer.update(dataset, generator)["loss"]
        if p % args.eval_every == 0 or p == args.passes:
            flown = held_out(last, args.episodes, args.seed)
            print(f"  pass {p:4d}: loss {loss:.5f}, held-out terminated {100 * flown['share_terminated']:.1f} %, "
                  f"return {flown['mean_return']:.1f}  ({time.time() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
