#!/usr/bin/env python
"""What a new process pays before the compiled paths run: the first `PointControlEnv.step` and the first APG update.

Each measurement runs in a fresh Python process (torch.compile caches its graphs per process), with the inductor
cache as it is (``warm``: a second run reads the kernels, dynamo still traces the function) or, with ``--cold``, also
with an empty temporary cache (every kernel compiled):

* env: build a 256-env `PointControlEnv` (randomised dynamics, compile on) and time its first step, then a second
  (the compiled call alone);
* apg: one `AnalyticPolicyGradient.update` of 64 flights x 20 steps (windows of 10, so both flight graphs are made:
  the state with and without a gradient) with the committed privileged teacher, then a second.

    python benchmarks/first_step.py [--cold] [--threads 1] [--json first_step.json]

Prints seconds per (cache, what): first call, second call. The first call is dynamo's trace of the function, the
autograd and inductor cache lookups (or, cold, the compile) and the call itself.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ENV = """
import time, torch
torch.set_num_threads({threads})
from eyas.envs import PointControlEnv, PointControlEnvCfg
env = PointControlEnv(PointControlEnvCfg(num_envs=256, compile=True, seed=0))
actions = torch.zeros(256, 4)
times = []
for _ in range(2):
    start = time.perf_counter(); env.step(actions); times.append(time.perf_counter() - start)
print(times)
"""

APG = """
import time, torch
torch.set_num_threads({threads})
from eyas.distill.apg import AnalyticPolicyGradient
from eyas.distill.config import APGConfig
from eyas.envs import PointControlEnvCfg
from eyas.model import StudentPolicy
from eyas.teachers import TeacherBank, load_teachers
bank = TeacherBank(load_teachers([{teacher!r}], "cpu"), "cpu")
apg = AnalyticPolicyGradient(StudentPolicy(22, 4, generator=torch.Generator().manual_seed(0)), bank,
                             PointControlEnvCfg(compile=True, seed=0), APGConfig(envs=64, horizon=20, window=10),
                             generator=torch.Generator().manual_seed(0))
times = []
for _ in range(2):
    start = time.perf_counter(); apg.update(); times.append(time.perf_counter() - start)
print(times)
"""


def run(code: str, cache_dir: str | None) -> list[float]:
    env = dict(os.environ)
    if cache_dir is not None:
        env["TORCHINDUCTOR_CACHE_DIR"] = cache_dir
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"first_step: the measuring process failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cold", action="store_true", help="also measure with an empty inductor cache")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, metavar="PATH")
    args = parser.parse_args()
    codes = {"env": ENV.format(threads=args.threads),
             "apg": APG.format(threads=args.threads, teacher=str(ROOT / "fixtures" / "teachers" / "privileged"))}
    rows = []
    print(f"{'cache':<6} {'what':<5} {'first call (s)':>15} {'second call (s)':>16}")
    with tempfile.TemporaryDirectory() as empty:
        for cache, cache_dir in [("cold", empty)] * args.cold + [("warm", None)]:
            for what, code in codes.items():
                first, second = run(code, cache_dir)
                rows.append({"cache": cache, "what": what, "first_s": first, "second_s": second})
                print(f"{cache:<6} {what:<5} {first:>15.2f} {second:>16.4f}", flush=True)
    if args.json:
        from eyas.io import atomic_write_json

        atomic_write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
