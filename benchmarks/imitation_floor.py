#!/usr/bin/env python
"""Is a distilled student limited by optimisation or by what its teacher's labels can teach?

Takes an aggregating `eyas distill` run (`--on_policy false`: its `state.pt` holds the last dataset) and

1. reports the MSE to the teacher's labels on that dataset, in rl-tools' batches, of the run's last student, its best
   actor and a reference policy (default: the released RAPTOR policy, which flies the randomised env well), and the
   last student's MSE on fresh episodes it flies itself, labelled by the run's teachers (a generalisation gap would
   mean more data helps);
2. keeps training the last student on the fixed dataset (`--passes` more passes, Adam state continued) and
   evaluates it on held-out randomised episodes every `--eval_every` passes.

If the loss stops falling while the share of terminated episodes stays put, the student sits at the imitation
floor of these labels; if the reference flies better with a much larger MSE, imitating these labels more closely
is not the way to fly better.

Two variations test whether capacity or the loss's emphasis sets that floor (neither is rl-tools' algorithm):
`--hidden_dim N` trains a fresh, wider student (rl-tools' initialisation) on the same dataset instead of continuing
the run's; `--early_weight A --early_tau T` weights each step's squared error by 1 + A exp(-t / T), t the step in its
episode (normalised to mean 1 over the dataset; A = 0 is rl-tools' MSE), to stress the first steps where the
student still identifies the quadrotor.

    python benchmarks/imitation_floor.py runs/distill-long [--reference foundation_policy] [--passes 60]
    python benchmarks/imitation_floor.py runs/distill-long --early_weight 50 --early_tau 20 --passes 200
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import time
from pathlib import Path

import torch

from eyas import StudentPolicy, load_rltools_h5, raptor_checkpoint_path
from eyas.distill.collect import collect
from eyas.teachers import TeacherBank, load_teachers
from eyas.distill.dataset import EpisodeDataset
from eyas.distill.config import resolve_task
from eyas.distill.trainer import Distillation
from eyas.envs.rollout import evaluate, student_policy_fn
from eyas.envs.point_control import PointControlEnv, PointControlEnvCfg


def mean_loss(trainer: Distillation, dataset: EpisodeDataset) -> float:
    """Mean rl-tools MSE over one unshuffled pass."""
    with torch.no_grad():
        losses = [float(trainer.loss(b)) for b in dataset.get_batches(trainer.batch_size, trainer.sequence_length, False)]
    return sum(losses) / len(losses)


def step_weights(dataset: EpisodeDataset, amplitude: float, tau: float) -> torch.Tensor:
    """1 + A exp(-t / tau) for every stored step (t: step in its episode), normalised to mean 1."""
    n = dataset.num_episodes
    starts, lengths = dataset.episode_start[:n], dataset.episode_length[:n]
    step = torch.arange(dataset.num_steps) - torch.repeat_interleave(starts, lengths, output_size=dataset.num_steps)
    weight = 1.0 + amplitude * torch.exp(-step.double() / tau)
    return (weight / weight.mean()).float()


def weighted_pass(trainer: Distillation, dataset: EpisodeDataset, weight: torch.Tensor,
                  generator: torch.Generator) -> float:
    """One pass in rl-tools' batches with the squared error of each sample scaled by ``weight[sample]``."""
    total, count = 0.0, 0
    for batch in dataset.get_batches(trainer.batch_size, trainer.sequence_length, True, generator):
        trainer.student.train()
        loss = ((trainer.predict(batch) - batch.targets).square().mean(-1) * weight[batch.index]).mean()
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainer.optimizer.step()
        total, count = total + float(loss.detach()), count + 1
    return total / count


def fresh_dataset(state: dict, student: StudentPolicy, episodes: int, seed: int) -> EpisodeDataset:
    """``episodes`` new episodes per teacher of the run, flown by ``student``, labelled by the teachers (DAgger)."""
    cfg = state["config"]
    bank = TeacherBank(load_teachers(cfg["teacher_checkpoint"]))
    env_cfg = resolve_task(cfg["task"])
    probe = PointControlEnv(dataclasses.replace(env_cfg, num_envs=1))  # the run's env, not the default one
    dataset = EpisodeDataset(len(bank) * episodes * probe.max_episode_length, probe.num_obs, probe.num_actions)
    collect(bank, env_cfg, num_episodes=episodes, num_envs=episodes, generator=torch.Generator().manual_seed(seed),
            device="cpu", student=copy.deepcopy(student).eval(), position_offsets=state["offsets"], dataset=dataset)
    return dataset


def held_out(policy: StudentPolicy, episodes: int, seed: int, dynamics: str = "randomized") -> dict:
    env = PointControlEnv(PointControlEnvCfg(num_envs=episodes, seed=seed, dynamics=dynamics))
    return evaluate(student_policy_fn(copy.deepcopy(policy).eval()), env, episodes).summary()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="log directory of an aggregating `eyas distill` run (holds state.pt)")
    parser.add_argument("--reference", default="foundation_policy",
                        help="rl-tools .h5 policy to compare with (default: the released RAPTOR policy)")
    parser.add_argument("--passes", type=int, default=60)
    parser.add_argument("--eval_every", type=int, default=20)
    parser.add_argument("--learning_rate", type=float, default=None, help="default: the run's")
    parser.add_argument("--hidden_dim", type=int, default=None,
                        help="train a fresh student of this GRU width instead of continuing the run's")
    parser.add_argument("--early_weight", type=float, default=0.0, help="A in 1 + A exp(-t / T) (0: rl-tools' MSE)")
    parser.add_argument("--early_tau", type=float, default=20.0, help="T in 1 + A exp(-t / T), in steps")
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--fresh_episodes", type=int, default=1024,
                        help="new student-flown episodes per teacher for the held-out MSE")
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--dynamics", default="randomized",
                        help="held-out dynamics: randomized or a registry model (for a single-model run)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    state = torch.load(Path(args.run) / "state.pt", weights_only=True, map_location="cpu")
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
    if args.hidden_dim is None:  # continue the run's student with its Adam state
        trained = last
        trainer = Distillation(trained, learning_rate=lr, batch_size=cfg["batch_size"],
                               sequence_length=cfg["sequence_length"])
        trainer.load_state_dict(state["trainer"])
        for group in trainer.optimizer.param_groups:
            group["lr"] = lr
    else:
        trained = StudentPolicy(num_obs, num_actions, args.hidden_dim, gradient_mode=cfg["gradient_mode"])
        trainer = Distillation(trained, learning_rate=lr, batch_size=cfg["batch_size"],
                               sequence_length=cfg["sequence_length"])
    reference_path = raptor_checkpoint_path() if args.reference == "foundation_policy" else args.reference
    reference = load_rltools_h5(str(reference_path))
    print(f"dataset: {len(dataset)} steps, {dataset.num_episodes} episodes (epoch {state['epoch']} of {args.run})")
    print(f"MSE to the teacher's labels ({cfg['batch_size']} x {cfg['sequence_length']} batches):")
    print(f"  {'policy':<28} {'MSE':>9}  held-out terminated "
          f"({args.episodes} {args.dynamics} episodes, seed {args.seed})")
    for name, policy in (("last student", last), ("best actor", student(state["best"]["student"])),
                         (f"reference ({args.reference})", reference)):
        loss = mean_loss(Distillation(policy, batch_size=cfg["batch_size"], sequence_length=cfg["sequence_length"]),
                         dataset)
        flown = held_out(policy, args.episodes, args.seed, args.dynamics)
        print(f"  {name:<28} {loss:9.5f}  {100 * flown['share_terminated']:.1f} %, return {flown['return_mean']:.1f}")
    fresh = fresh_dataset(state, last, args.fresh_episodes, args.seed)
    loss = mean_loss(Distillation(last, batch_size=cfg["batch_size"], sequence_length=cfg["sequence_length"]), fresh)
    print(f"  {'last student, fresh data':<28} {loss:9.5f}  ({fresh.num_episodes} new episodes it flew, "
          f"labelled by the teachers)")

    what = (f"a fresh {args.hidden_dim}-unit student" if args.hidden_dim is not None else "the last student")
    emphasis = (f", early-step weight 1 + {args.early_weight:g} exp(-t / {args.early_tau:g})" if args.early_weight
                else "")
    print(f"\n{what}, more passes over the fixed dataset (α {lr:g}{emphasis}):")
    weight = step_weights(dataset, args.early_weight, args.early_tau) if args.early_weight else None
    generator = torch.Generator().manual_seed(0)
    start = time.time()
    for p in range(1, args.passes + 1):
        if weight is None:
            loss = trainer.update(dataset, generator)["loss"]
        else:
            loss = weighted_pass(trainer, dataset, weight, generator)
        if p % args.eval_every == 0 or p == args.passes:
            flown = held_out(trained, args.episodes, args.seed, args.dynamics)
            kind = " (weighted)" if weight is not None else ""
            print(f"  pass {p:4d}: loss {loss:.5f}{kind}, held-out terminated {100 * flown['share_terminated']:.1f} %, "
                  f"return {flown['return_mean']:.1f}  ({time.time() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
