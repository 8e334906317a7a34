#!/usr/bin/env python
"""One APG step, one DAgger collection or 200 env steps of this checkout against another revision's, interleaved.

Two worker processes, one per checkout (each with its own Python), build the same workload, then take turns on one
core: A times one iteration, hands over to B through a pipe, B times one, ... So every pair of figures is measured
seconds apart, and a machine whose speed drifts by tens of percent between processes (as shared cores do) still gives
a tight ratio. Prints each side's median wall and CPU seconds per iteration and the median ratio of each of this
checkout's iterations to the geometric mean of the reference's iterations before and after it (> 1: this checkout
is slower; the reference goes first, and the two neighbours cancel the order), with their quartiles.

    python benchmarks/interleaved.py --reference /tmp/ref --reference_python /tmp/refvenv/bin/python \\
        --work apg --student fixtures/students/main_job_mixed/student.h5 [--pairs 40] [--cpu 0]

Workloads (1 torch thread, compiled paths, warmed up by 3 untimed iterations): ``apg``: `AnalyticPolicyGradient
.update` on 1,024 flights x 200 steps with the privileged teacher; ``collect``: one DAgger `collect` of 8 synthetic
teachers x 10 episodes (bench_train's); ``env``: 200 `PointControlEnv.step` calls on ``--envs`` rows of randomised
dynamics, random actions. The worker uses only APIs both revisions share (this file runs in the reference's tree).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def workload(args):
    """The iteration to time, built in this process's eyas (either checkout)."""
    import copy

    import torch

    from eyas.envs import PointControlEnv, PointControlEnvCfg
    from eyas.model import StudentPolicy
    from eyas.rltools_h5 import load_rltools_h5

    torch.set_num_threads(1)
    cfg = PointControlEnvCfg(compile=True)
    student = (load_rltools_h5(args.student) if args.student
               else StudentPolicy(22, 4, generator=torch.Generator().manual_seed(0)))
    if args.work == "env":
        env = PointControlEnv(PointControlEnvCfg(num_envs=args.envs, dynamics="randomized", seed=0, compile=True))
        actions = torch.rand(16, args.envs, 4, generator=torch.Generator().manual_seed(1)) * 2 - 1
        return lambda: [env.step(actions[k % 16]) for k in range(200)]
    bank = _teachers(args.work)
    if args.work == "apg":
        from eyas.distill.apg import AnalyticPolicyGradient, APGConfig

        apg = AnalyticPolicyGradient(copy.deepcopy(student), bank, cfg, APGConfig(envs=1024, horizon=200),
                                     generator=torch.Generator().manual_seed(2), device="cpu")
        return apg.update
    from eyas.distill.collect import collect, estimate_position_offsets
    from eyas.distill.dataset import EpisodeDataset

    g = torch.Generator().manual_seed(1)
    offsets, _ = estimate_position_offsets(bank, cfg, num_episodes=10, num_envs=1024, generator=g, device="cpu")
    dataset = EpisodeDataset(len(bank) * 10 * 500, 22, 4)

    def one_collection():
        dataset.clear()
        collect(bank, cfg, num_episodes=10, num_envs=1024, generator=g, device="cpu", student=student,
                position_offsets=offsets, dataset=dataset)
    return one_collection


def _teachers(work: str):
    import torch
    from torch import nn

    from eyas import sim
    from eyas.teachers import Teacher, TeacherBank, load_teachers

    if work == "apg":
        return TeacherBank(load_teachers([str(ROOT / "fixtures" / "teachers" / "privileged")], "cpu"), "cpu")
    params = sim.sample_domain_randomized_params(8, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    nets = [nn.Sequential(nn.Linear(74, 64), nn.ELU(), nn.Linear(64, 4)) for _ in range(8)]
    return TeacherBank([Teacher(net, num_obs=74, params=params[i], name=f"synthetic{i}")
                        for i, net in enumerate(nets)], "cpu")


def worker(args) -> None:
    """Build the workload, warm it up, then time one iteration per turn (``--turn``: read a byte, run, write one)."""
    run = workload(args)
    for _ in range(3):
        run()
    wait = os.fdopen(os.open(args.wait, os.O_RDWR), "rb", buffering=0)
    hand = os.fdopen(os.open(args.hand, os.O_RDWR), "wb", buffering=0)
    if args.first:
        hand.write(b"x")
    for _ in range(args.pairs):
        wait.read(1)
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        print(f"{time.perf_counter() - wall:.6f} {time.process_time() - cpu:.6f}", flush=True)
        hand.write(b"x")


def compare(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pipes = [Path(tmp) / "to_this", Path(tmp) / "to_reference"]
        for p in pipes:
            os.mkfifo(p)
        common = ["--work", args.work, "--pairs", str(args.pairs), "--envs", str(args.envs)] + (
            ["--student", str(args.student)] if args.student else [])
        pin = ["taskset", "-c", str(args.cpu)] if args.cpu is not None else []
        sides = [(args.python, ROOT, pipes[0], pipes[1], []), (args.reference_python, args.reference, pipes[1],
                                                                 pipes[0], ["--first"])]
        procs = [subprocess.Popen(pin + [python, str(Path(__file__).resolve()), "--worker", "--wait", str(wait),
                                         "--hand", str(hand), *first, *common], cwd=tree, stdout=subprocess.PIPE,
                                  text=True) for python, tree, wait, hand, first in sides]
        outputs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        sys.exit(f"a worker failed (exit codes {[p.returncode for p in procs]})")
    this, ref = ([tuple(map(float, line.split())) for line in out.splitlines()] for out in outputs)
    print(f"{args.work}: {len(this)} interleaved pairs")
    for k, name in enumerate(("wall", "cpu")):
        # each of this checkout's iterations against the geometric mean of the reference's just before and after it,
        # so that neither side gains from its place in the turns
        ratios = sorted(this[i][k] / (ref[i][k] * ref[i + 1][k]) ** 0.5 for i in range(len(this) - 1))
        print(f"{name:5s} s: this {statistics.median(a[k] for a in this):.4f}  reference "
              f"{statistics.median(b[k] for b in ref):.4f}  this / reference {statistics.median(ratios):.3f} "
              f"(quartiles {ratios[len(ratios) // 4]:.3f}-{ratios[3 * len(ratios) // 4]:.3f})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference", type=Path, help="the other revision's checkout")
    p.add_argument("--reference_python", help="a Python with that checkout installed")
    p.add_argument("--python", default=sys.executable, help="a Python with this checkout installed")
    p.add_argument("--work", choices=["apg", "collect", "env"], default="apg")
    p.add_argument("--pairs", type=int, default=40)
    p.add_argument("--envs", type=int, default=1024, help="rows of the env workload")
    p.add_argument("--student", type=lambda v: Path(v).resolve(), default=None,
                   help="a trained rl-tools .h5 student (default: an untrained one, whose flights end early)")
    p.add_argument("--cpu", type=int, default=0, help="the core both workers take turns on")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--first", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--wait", help=argparse.SUPPRESS)
    p.add_argument("--hand", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
    elif args.reference is None or args.reference_python is None:
        p.error("--reference and --reference_python are required")
    else:
        compare(args)


if __name__ == "__main__":
    main()
