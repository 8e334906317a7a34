"""The float32 error of every `eyas parity` row, observed over the released RAPTOR checkpoint and random students:
the measurement `eyas.parity.TOLERANCE["float32"]` is derived from (docs/reliability.md, "Parity tolerances").

Per row, the largest error over every source (RAPTOR on several input seeds; rl-tools-initialised students with a
random initial hidden state, 22 and 26 observations, without and with in-sequence resets), the tolerance in force
and their ratio; also the Adam trajectory at 100 steps and the trainer step's Adam moments
(parity_tests/test_trainer_step.py). Prints a table; ``--json FILE`` writes the figures.

    python benchmarks/parity_errors.py [--students 6] [--json parity_errors.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from eyas import raptor_checkpoint_path
from eyas.parity import ABSOLUTE, BATCH_SIZE, SEQUENCE_LENGTH, TOLERANCE, _errors, measure, random_batches
from eyas.parity import adam_trajectory
from eyas.rltools_h5 import load_rltools_h5

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "parity_tests"))
from parity_helpers import random_policy, random_sequences  # noqa: E402
from test_trainer_step import moment_errors  # noqa: E402


def raptor_inputs(num_obs: int, seed: int):
    """`eyas parity`'s own random sequences for ``--seed seed``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(SEQUENCE_LENGTH, BATCH_SIZE, num_obs, generator=g)
    reset = torch.rand(SEQUENCE_LENGTH, BATCH_SIZE, generator=g) < 2e-3
    y = 0.5 * torch.randn(SEQUENCE_LENGTH, BATCH_SIZE, 4, generator=torch.Generator().manual_seed(seed + 1))
    return x, y, reset


def sources(students: int):
    """(label, policy, x, y, reset, adam_steps): RAPTOR on four input seeds, then the random students."""
    raptor = load_rltools_h5(str(raptor_checkpoint_path()), dtype=torch.float32)
    for seed in range(4):
        yield f"raptor seed {seed}", raptor, *raptor_inputs(raptor.num_obs, seed), 10 if seed == 0 else 0
    for seed in range(students):
        for num_obs in (22, 26):
            for reset_prob in (0.0, 2e-3, 1e-2):
                policy = random_policy(num_obs, torch.float32, seed=100 + seed)
                x, y, reset = random_sequences(SEQUENCE_LENGTH, BATCH_SIZE, num_obs, torch.float32, seed=seed,
                                               reset_prob=reset_prob)
                adam = 10 if reset_prob == 2e-3 else 0
                yield f"student {seed} obs{num_obs} resets {reset_prob:g}", policy, x, y, reset, adam


def observed(students: int) -> dict[str, tuple[float, str]]:
    """Per row, (largest error over every source, the source it came from)."""
    worst: dict[str, tuple[float, str]] = {}
    for label, policy, x, y, reset, adam_steps in sources(students):
        for quantity, (ours, cpp) in measure(policy, x, y, reset, adam_steps=adam_steps).items():
            error = _errors(ours, cpp)[0 if quantity in ABSOLUTE else 1]
            if error >= worst.get(quantity, (-1.0, ""))[0]:
                worst[quantity] = (error, label)
    return worst


def long_adam(students: int, steps: int = 100) -> float:
    """Largest relative parameter difference over ``steps`` Adam steps (RAPTOR and the random students)."""
    policies = [load_rltools_h5(str(raptor_checkpoint_path()), dtype=torch.float32)]
    policies += [random_policy(22, torch.float32, seed=100 + seed) for seed in range(min(students, 3))]
    return max(float(adam_trajectory(p, list(random_batches(p.num_obs, torch.float32, steps, seed=81))).max())
               for p in policies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=6, help="random students (each on 6 input kinds)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.time()
    worst = observed(args.students)
    tol = TOLERANCE["float32"]
    print(f"{'row':<28}{'observed':>12}{'tolerance':>12}{'ratio':>8}  worst source")
    for quantity, (error, label) in worst.items():
        ratio = tol[quantity] / error if error > 0 else float("inf")
        print(f"{quantity:<28}{error:12.3e}{tol[quantity]:12.1e}{ratio:8.1f}  {label}")
    adam100 = long_adam(args.students)
    moments = moment_errors()
    print(f"adam, 100 steps: {adam100:.3e}; trainer-step Adam moments (float32, 3 steps): first {moments[0]:.3e}, "
          f"second {moments[1]:.3e}  ({time.time() - start:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({"rows": {k: v[0] for k, v in worst.items()}, "adam_100": adam100,
                                         "moments": moments}, indent=1))


if __name__ == "__main__":
    main()
