"""`eyas distill` under torchrun with 1 and with N processes on the same settings: collection and training
throughput per epoch, and a per-rank estimate of a RAPTOR-size epoch (docs/scaling.md). The epochs are DAgger
epochs flown by a trained student (``--init_student``, default the committed `fixtures/students/main_job`, which
flies whole 500-step episodes, as RAPTOR's students do for most of its 1000 epochs) with the teacher labelling
every step; ``--init_student none``: the teacher flies (teacher forcing).

    python benchmarks/distributed_scaling.py [--procs 1 2] [--teacher fixtures/teachers/privileged] [--device cpu]
        [--init_student fixtures/students/main_job/student.h5 | none]

Each launch is ``python -m torch.distributed.run --standalone --nproc_per_node N -m eyas.distill ...`` (1 torch
thread per process); the figures are rank 0's timings of the epochs after the first (``history.json``):

* collection: env steps flown by all ranks per second of rank 0's collection (every teacher flies
  ``--num_episodes``; the steps are the episodes' lengths, summed over teachers);
* training: sample-steps (rows x sequence steps) of all ranks per second of rank 0's training pass, and the
  time of one gradient step.
Wall time includes process start, the teachers' offset evaluation, evaluations and the final report.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RAPTOR = {"teachers": 1000, "episodes": 10, "steps": 500, "batch": 64, "sequence": 500, "epochs": 1000}


def launch(procs: int, out: Path, args) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs), "-m",
           "eyas.distill", "--teacher_checkpoint", args.teacher, "--log_dir", str(out), "--device", args.device,
           "--quiet", "--num_threads", "1", "--num_envs", str(args.num_envs), "--num_episodes", str(args.num_episodes),
           "--n_epochs", str(args.epochs),
           *(["--epoch_teacher_forcing", str(args.epochs)] if args.init_student == "none" else
             ["--epoch_teacher_forcing", "0", "--init_student", args.init_student]), "--batch_size", str(args.batch_size),
           "--sequence_length", str(args.sequence_length), "--offset_episodes", str(args.num_episodes),
           "--eval_episodes", str(args.num_episodes), "--eval_registry_episodes", "0", "--final_eval_episodes",
           str(args.num_episodes), "--plots", "false", "--seed", "0"]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode:
        sys.exit(f"{procs} process(es) failed:\n{done.stderr[-3000:]}")
    wall = time.perf_counter() - t0
    history = json.loads((out / "history.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    teachers = summary["teachers"]["count"]
    rows = history["history"][1:]  # the first epoch warms up
    steps = sum(r["evaluation"]["episode_length_mean"] * teachers * args.num_episodes for r in rows)
    samples = sum(r["num_batches"] * args.batch_size * args.sequence_length for r in rows)
    batches = sum(r["num_batches"] for r in rows)
    collect_s, train_s = sum(r["collect_s"] for r in rows), sum(r["train_s"] for r in rows)
    return {"procs": procs, "world_size": summary["world_size"], "wall_s": wall,
            "collect_steps_per_s": steps / collect_s, "train_samples_per_s": samples / train_s,
            "step_ms": 1000 * train_s / batches, "collect_s": collect_s / len(rows), "train_s": train_s / len(rows),
            "eval_s": sum(r.get("eval_s", 0) for r in rows) / len(rows),
            "episode_length": sum(r["evaluation"]["episode_length_mean"] for r in rows) / len(rows)}


def step_seconds(rows: int, sequence: int, repeats: int = 5) -> float:
    """Median time of one training step (forward with resets, MSE, backward, rl-tools' Adam) on ``rows`` x
    ``sequence`` random samples: what a rank spends per gradient step with ``rows`` = batch / ranks."""
    import torch

    from eyas.distill.dataset import Batch
    from eyas.distill.trainer import Distillation
    from eyas.model import StudentPolicy

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    trainer = Distillation(StudentPolicy(22, 4, generator=g), batch_size=rows, sequence_length=sequence)
    batch = Batch(torch.randn(sequence, rows, 22, generator=g), torch.randn(sequence, rows, 4, generator=g),
                  torch.rand(sequence, rows, generator=g) < 0.002)
    times = []
    for _ in range(repeats + 1):  # the first warms up
        t0 = time.perf_counter()
        trainer.train_step(batch)
        times.append(time.perf_counter() - t0)
    return sorted(times[1:])[len(times[1:]) // 2]


def raptor_estimate(per_rank_collect: float, ranks: int) -> dict:
    """One RAPTOR epoch (1000 teachers x 10 episodes x 500 steps, batches of 64 x 500) on ``ranks`` ranks: the
    collection split evenly at the measured per-rank rate, and every gradient step taking a rank as long as one
    step on its 64 / ranks rows (measured: `step_seconds`); the all-reduce of 2,084 gradients per step (8 KB) is
    left out."""
    r = RAPTOR
    steps = r["teachers"] * r["episodes"] * r["steps"]
    batches = (steps - 1) // (r["batch"] * r["sequence"])
    step_s = step_seconds(max(1, r["batch"] // ranks), r["sequence"])
    collect_s, train_s = steps / (ranks * per_rank_collect), batches * step_s
    return {"ranks": ranks, "epoch_s": collect_s + train_s, "collect_s": collect_s, "train_s": train_s,
            "step_ms": 1000 * step_s, "run_h": r["epochs"] * (collect_s + train_s) / 3600}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--teacher", default=str(ROOT / "fixtures" / "teachers" / "privileged"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--init_student", default=str(ROOT / "fixtures" / "students" / "main_job" / "student.h5"))
    p.add_argument("--num_envs", type=int, default=128)
    p.add_argument("--num_episodes", type=int, default=128)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--sequence_length", type=int, default=100)
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 8, 64], help="RAPTOR estimate for these rank counts")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = [launch(n, Path(tmp) / f"n{n}", args) for n in args.procs]
    base = results[0]
    print(f"{'procs':>5} {'collect steps/s':>16} {'x':>5} {'train samples/s':>16} {'x':>5} {'step ms':>8} "
          f"{'collect s':>9} {'train s':>8} {'eval s':>7} {'wall s':>7} {'ep. length':>10}")
    for r in results:
        print(f"{r['procs']:>5} {r['collect_steps_per_s']:>16.0f} {r['collect_steps_per_s'] / base['collect_steps_per_s']:>5.2f} "
              f"{r['train_samples_per_s']:>16.0f} {r['train_samples_per_s'] / base['train_samples_per_s']:>5.2f} "
              f"{r['step_ms']:>8.1f} {r['collect_s']:>9.2f} {r['train_s']:>8.2f} {r['eval_s']:>7.2f} {r['wall_s']:>7.1f} "
              f"{r['episode_length']:>10.1f}")
    collect = base["collect_steps_per_s"] / base["procs"]
    print(f"RAPTOR-size epoch ({RAPTOR['teachers']} teachers x {RAPTOR['episodes']} episodes x {RAPTOR['steps']} "
          f"steps, batches {RAPTOR['batch']} x {RAPTOR['sequence']}) at the measured per-rank collection rate "
          f"({collect:.0f} env steps/s) and measured step times:")
    for n in args.ranks:
        e = raptor_estimate(collect, n)
        print(f"  {n:>4} ranks: {e['epoch_s']:8.1f} s per epoch ({e['collect_s']:.1f} s collect, {e['train_s']:.1f} s "
              f"train: {RAPTOR['batch'] // n} rows x {RAPTOR['sequence']} per rank and step, {e['step_ms']:.0f} ms), "
              f"{RAPTOR['epochs']} epochs: {e['run_h']:.1f} h")


if __name__ == "__main__":
    main()
