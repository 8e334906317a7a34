"""Fly students (rl-tools .h5) and RAPTOR on the same held-out episodes and print final position error and
terminations per group, as `eyas distill`'s final table does (the same episodes as a run's final evaluation for
the same --seed and counts).

    python benchmarks/compare_policies.py runs/x/best_actor.h5 runs/x/checkpoints/apg_50/actor.h5 [--randomized 500]
        [--teacher fixtures/teachers/privileged]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from eyas import load_rltools_h5, raptor_checkpoint_path
from eyas.distill.evaluation import Evaluator, teacher_policy_fn
from eyas.envs import PointControlEnvCfg
from eyas.sim import MODEL_NAMES

FINAL_SEED_OFFSET = 2_000_029  # DistillationRunner's final evaluation: seed + this


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("students", nargs="+", type=Path)
    p.add_argument("--randomized", type=int, default=500, help="held-out randomised episodes")
    p.add_argument("--per_model", type=int, default=10, help="episodes per registry model")
    p.add_argument("--seed", type=int, default=0, help="the run's --seed")
    p.add_argument("--teacher", type=Path, help="also fly this teacher (any `eyas distill --teacher_checkpoint`)")
    p.add_argument("--json", type=Path, help="also write every summary here")
    args = p.parse_args()
    torch.set_num_threads(1)
    evaluator = Evaluator(PointControlEnvCfg(), randomized=args.randomized, per_model=args.per_model,
                          models=list(MODEL_NAMES), seed=args.seed + FINAL_SEED_OFFSET, device="cpu")
    policies = {str(s): load_rltools_h5(s).eval() for s in args.students}
    policies["RAPTOR"] = load_rltools_h5(raptor_checkpoint_path()).eval()
    results = {name: evaluator(policy) for name, policy in policies.items()}
    if args.teacher:
        from eyas.teachers import load_teachers

        (teacher,) = load_teachers([args.teacher])
        results = {"teacher": evaluator.evaluate_fn(teacher_policy_fn(teacher))} | results
    labels = [n if n in ("RAPTOR", "teacher") else "/".join(Path(n).with_suffix("").parts[-3:])[-24:] for n in results]
    print(f"{'group':<11} {'episodes':>8}  " + "  ".join(f"{label:>24}" for label in labels))
    for group, _, _ in evaluator.groups:
        cells = [f"{100 * r[group]['share_terminated']:5.1f}% {100 * r[group]['position_error_mean']:6.2f} cm"
                 for r in results.values()]
        print(f"{group:<11} {results['RAPTOR'][group]['episodes']:>8}  " + "  ".join(f"{c:>24}" for c in cells))
    print("(terminated share, final position error: mean |p - target| over the last second of episodes not terminated)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
