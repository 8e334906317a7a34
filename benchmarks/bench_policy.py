"""InferencePolicy vs StudentPolicy vs rl-tools' C++ (the bridge) vs foundation_policy (numpy), in one process.

(a) a post-training step on 500 x 64 (forward with resets, MSE, backward, Adam): PyTorch / C++;
(b) batch-1 step latency (what a flight controller pays per 100 Hz tick);
(c) batch-4096 step (many simulated drones at once).
The candidates are measured in interleaved rounds (medians), so the ratios compare runs moments apart; run it on
an idle machine for absolute figures:

    python benchmarks/bench_policy.py [--device cuda] [--threads N] [--rounds 5] [--json out.json]

``--json PATH`` writes {"batch1_us": {inference_policy, student_policy, bridge, foundation_policy},
"train_step_ms": {pytorch, bridge}, "batch4096_ms": {same four}, "ratios": {...}, "machine": {...}}
(foundation_policy null when it is not installed). ``bridge`` is the C++ chain alone (its loop over loaded
data); InferencePolicy, the bridge and foundation_policy run on the CPU whatever ``--device`` (which moves
StudentPolicy and the PyTorch training step).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics

import numpy as np
import torch

from timing import timeit  # benchmarks/timing.py

import eyas
from eyas.bridge import chain_for
from eyas.optim import RLToolsAdam


def interleaved(fns: dict, rounds: int, number: int, sync=lambda: None) -> dict:
    """Median seconds per call of each function, measured in ``rounds`` alternating rounds."""
    runs = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            runs[k].append(timeit(fn, repeat=3, number=number, sync=sync))
    return {k: statistics.median(v) for k, v in runs.items()}


def train_step(device, dtype, rounds: int, sync) -> dict:
    g = torch.Generator().manual_seed(0)
    policy = eyas.StudentPolicy(22, 4, dtype=dtype, generator=g)
    x = torch.randn(500, 64, 22, generator=g, dtype=dtype)
    y = 0.5 * torch.randn(500, 64, 4, generator=g, dtype=dtype)
    reset = torch.rand(500, 64, generator=g) < 2e-3
    chain = chain_for(policy, 500, 64)
    chain.train_step(x.numpy(), y.numpy(), reset.numpy())
    pt = eyas.StudentPolicy(22, 4, dtype=dtype, device=device)
    pt.load_rltools_parameters(policy.rltools_parameters())
    opt = RLToolsAdam(pt.parameters(), lr=1e-4)
    xd, yd, rd = x.to(device), y.to(device), reset.to(device)

    def torch_step():
        opt.zero_grad(set_to_none=True)
        pt.reset()
        loss = torch.nn.functional.mse_loss(pt(xd, rd), yd)
        loss.backward()
        opt.step()

    t = interleaved({"pytorch": torch_step, "bridge": lambda: chain.train_steps_loaded(1)}, rounds, 2, sync)
    return {k: v * 1e3 for k, v in t.items()}


def evaluate_step(batch: int, raptor, fp, device, rounds: int, number: int, sync) -> dict:
    """Seconds per step of each candidate at this batch size (same observation every step)."""
    obs = np.random.default_rng(0).standard_normal((batch, 22)).astype(np.float32)
    chain = chain_for(raptor, 500 if batch == 1 else 1, batch, dtype="float32")
    chain.reset()
    chain.evaluate_step(obs)
    fast = eyas.InferencePolicy(raptor, batch)
    out = np.empty((batch, 4), np.float32)
    obs_t = torch.from_numpy(obs).to(device)
    raptor.reset(batch_size=batch)

    @torch.inference_mode()
    def student():
        raptor(obs_t)

    fns = {"inference_policy": lambda: fast.step(obs, out), "student_policy": student,
           "bridge": lambda: chain.evaluate_steps_loaded(1)}
    if fp is not None:
        fp.reset()
        fns["foundation_policy"] = lambda: fp.evaluate_step(obs)
    t = interleaved(fns, rounds, number, sync)
    t.setdefault("foundation_policy", None)
    # the bridge's own evaluate_step with numpy in/out (one call per step, as InferencePolicy), for reference
    t["bridge_evaluate_step_numpy"] = timeit(lambda: chain.evaluate_step(obs), 3, number)
    return t


def ratio(a, b):
    return None if a is None or b is None else a / b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (C++ is single-threaded)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"], help="training step dtype")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved measuring rounds (medians)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = torch.float32 if args.dtype == "float32" else torch.float64
    sync = (lambda: torch.cuda.synchronize()) if device.type == "cuda" else (lambda: None)
    machine = {"cpu": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(),
               "torch": torch.__version__, "device": str(device), "train_dtype": args.dtype,
               "cuda": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    print(json.dumps(machine))

    fp = None
    try:
        import foundation_policy

        fp = foundation_policy.load(str(eyas.raptor_checkpoint_path()))
    except ImportError:
        print("(foundation_policy not installed: no numpy column)")
    raptor = eyas.load_rltools_h5(eyas.raptor_checkpoint_path(), dtype=torch.float32, device=device)
    raptor.validate_inputs = False  # measure the network, not the NaN check

    train = train_step(device, dtype, args.rounds, sync)
    b1 = evaluate_step(1, raptor, fp, device, args.rounds, 1000, sync)
    b4096 = evaluate_step(4096, raptor, fp, device, args.rounds, 10, sync)
    results = {
        "batch1_us": {k: None if v is None else v * 1e6 for k, v in b1.items() if k != "bridge_evaluate_step_numpy"},
        "train_step_ms": train,
        "batch4096_ms": {k: None if v is None else v * 1e3 for k, v in b4096.items()
                         if k != "bridge_evaluate_step_numpy"},
        "bridge_evaluate_step_numpy": {"batch1_us": b1["bridge_evaluate_step_numpy"] * 1e6,
                                       "batch4096_ms": b4096["bridge_evaluate_step_numpy"] * 1e3},
        "ratios": {
            "train_pytorch_over_bridge": train["pytorch"] / train["bridge"],
            "batch1_inference_policy_over_foundation_policy": ratio(b1["inference_policy"], b1["foundation_policy"]),
            "batch1_inference_policy_over_student_policy": b1["inference_policy"] / b1["student_policy"],
            "batch1_inference_policy_over_bridge": b1["inference_policy"] / b1["bridge"],
            "batch4096_student_policy_over_bridge": b4096["student_policy"] / b4096["bridge"],
            "batch4096_inference_policy_over_bridge": b4096["inference_policy"] / b4096["bridge"],
        },
        "machine": machine,
    }
    print_table(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


def print_table(r: dict) -> None:
    def cell(v, unit):
        return f"{v:10.3f} {unit}" if v is not None else f"{'-':>13}"

    names = ("inference_policy", "student_policy", "bridge", "foundation_policy")
    print(f"\n{'':<22}" + "".join(f"{n:>18}" for n in names))
    print(f"{'batch 1 step':<22}" + "".join(f"{cell(r['batch1_us'][n], 'us'):>18}" for n in names))
    print(f"{'batch 4096 step':<22}" + "".join(f"{cell(r['batch4096_ms'][n], 'ms'):>18}" for n in names))
    t = r["train_step_ms"]
    print(f"\ntrain step 500x64 (fwd+bwd+Adam): PyTorch {t['pytorch']:.1f} ms, rl-tools C++ {t['bridge']:.1f} ms")
    print("\nratios (< 1: the first is faster):")
    for k, v in r["ratios"].items():
        print(f"  {k:<50} {'-' if v is None else f'{v:.3f}'}")


if __name__ == "__main__":
    main()
