#!/usr/bin/env python
"""This checkout's env and training speed against another revision's, in the same run: "no slower than before".

Runs bench_env.py (compiled env steps per second at --sizes) and bench_train.py (one APG step and one epoch's DAgger
collection, compiled path) of each checkout with that checkout's own Python, alternately (A B A B ..., --rounds
pairs) so that a drifting machine slows both alike, and prints each figure's median over the rounds and the ratio
this / reference per round (ratios > 1 mean this checkout is faster for throughputs, slower for times).

    git worktree add /tmp/ref <revision> && python -m venv /tmp/refvenv && /tmp/refvenv/bin/pip install -e /tmp/ref
    python benchmarks/against_revision.py --reference /tmp/ref --reference_python /tmp/refvenv/bin/python \
        [--student fixtures/students/main_job_mixed/student.h5 --repeat 5]

Each benchmark runs with one torch thread (a shared machine's other cores stay out of it).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def env_figures(tree: Path, python: str, sizes: list[int], out: Path) -> dict:
    """Compiled env steps per second per size (bench_env.py's eyas_env_steps_per_s)."""
    subprocess.run([python, str(tree / "benchmarks" / "bench_env.py"), "--sizes", *map(str, sizes), "--threads", "1",
                    "--paths", "compiled", "--devices", "cpu", "--json", str(out)], cwd=tree, check=True,
                   stdout=subprocess.DEVNULL)
    return {f"env steps/s, {row['num_envs']} envs": row["eyas_env_steps_per_s"] for row in json.loads(out.read_text())}


def train_figures(tree: Path, python: str, out: Path, student: Path | None, repeat: int) -> dict:
    """Seconds of one compiled APG step and of one epoch's DAgger collection (bench_train.py)."""
    subprocess.run([python, str(tree / "benchmarks" / "bench_train.py"), "--threads", "1", "--paths", "compiled",
                    "--teachers", str(tree / "fixtures" / "teachers" / "privileged"), "--skip_step", "--repeat",
                    str(repeat), "--json", str(out)] + (["--student", str(student)] if student else []),
                   cwd=tree, check=True, stdout=subprocess.DEVNULL)
    figures = json.loads(out.read_text())
    return {"APG step s": figures["apg_step_s"]["compiled"], "collect epoch s": figures["collect_epoch_s"]["compiled"]}


def one_round(tree: Path, python: str, args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        figures = env_figures(tree, python, args.sizes, Path(tmp) / "env.json")
        return figures if args.skip_train else figures | train_figures(tree, python, Path(tmp) / "train.json",
                                                                        args.student, args.repeat)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reference", required=True, type=Path, help="the other revision's checkout")
    p.add_argument("--reference_python", required=True, help="a Python with that checkout installed")
    p.add_argument("--python", default=sys.executable, help="a Python with this checkout installed")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 1024, 4096])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--skip_train", action="store_true", help="only bench_env")
    p.add_argument("--student", type=lambda v: Path(v).resolve(), default=None,
                   help="a trained rl-tools .h5 student for both checkouts' DAgger and APG flights (default: an "
                        "untrained one, whose flights end within ~50 steps)")
    p.add_argument("--repeat", type=int, default=2, help="bench_train's APG steps timed per round")
    args = p.parse_args()
    this, ref = [], []
    for r in range(args.rounds):
        this.append(one_round(ROOT, args.python, args))
        ref.append(one_round(args.reference.resolve(), args.reference_python, args))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    print(f"{'figure':28s} {'this':>12s} {'reference':>12s} {'ratio (median of rounds)':>26s}")
    for key in this[0]:
        ratios = [a[key] / b[key] for a, b in zip(this, ref)]
        print(f"{key:28s} {statistics.median(a[key] for a in this):12.4g} "
              f"{statistics.median(b[key] for b in ref):12.4g} {statistics.median(ratios):14.3f} "
              f"[{min(ratios):.3f}, {max(ratios):.3f}]")


if __name__ == "__main__":
    main()
