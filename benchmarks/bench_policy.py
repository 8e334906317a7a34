"""PyTorch StudentPolicy vs rl-tools' C++ (the bridge) vs foundation_policy (numpy), in one process.

(a) a post-training step on 500 x 64 (forward with resets, MSE, backward, Adam), PyTorch / C++;
(b) batch-1 step latency (what a flight controller pays per 100 Hz tick);
(c) batch-4096 step (many simulated drones at once).
Prints times and ratios against the C++ reference; run it on an idle machine:

    python benchmarks/bench_policy.py [--device cuda] [--threads N]
"""
from __future__ import annotations

import argparse
import platform

import numpy as np
import torch

from timing import timeit  # benchmarks/timing.py

import eyas
from eyas.bridge import chain_for
from eyas.optim import RLToolsAdam


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (C++ is single-threaded)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = torch.float32 if args.dtype == "float32" else torch.float64
    sync = (lambda: torch.cuda.synchronize()) if device.type == "cuda" else (lambda: None)
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch thread(s), "
          f"torch {torch.__version__}, device {device}, {args.dtype}")

    g = torch.Generator().manual_seed(0)
    policy = eyas.StudentPolicy(22, 4, dtype=dtype, generator=g)
    rows = []

    # (a) training step 500 x 64
    x = torch.randn(500, 64, 22, generator=g, dtype=dtype)
    y = 0.5 * torch.randn(500, 64, 4, generator=g, dtype=dtype)
    reset = torch.rand(500, 64, generator=g) < 2e-3
    chain = chain_for(policy, 500, 64)
    chain.train_step(x.numpy(), y.numpy(), reset.numpy())
    t_cpp = timeit(lambda: chain.train_steps_loaded(1), repeat=5, number=3)
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

    t_pt = timeit(torch_step, repeat=5, number=3, sync=sync)
    rows.append(("train step 500x64 (fwd+bwd+Adam)", t_pt, t_cpp, None))

    # (b) batch-1 latency and (c) batch-4096 step
    fp = None
    try:
        import foundation_policy

        fp = foundation_policy.load(str(eyas.raptor_checkpoint_path()))
    except ImportError:
        pass
    raptor = eyas.load_rltools_h5(eyas.raptor_checkpoint_path(), dtype=torch.float32,
                                  device=device) if fp is not None else policy
    raptor.validate_inputs = False  # measure the network, not the NaN check
    for batch, seq, number in ((1, 500, 500), (4096, 1, 20)):
        chain = chain_for(raptor, seq, batch, dtype="float32")
        obs = np.random.default_rng(0).standard_normal((batch, 22)).astype(np.float32)
        chain.reset()
        chain.evaluate_step(obs)
        t_cpp = timeit(lambda: chain.evaluate_steps_loaded(1), repeat=5, number=number)
        obs_t = torch.from_numpy(obs).to(device)
        raptor.reset(batch_size=batch)

        @torch.inference_mode()
        def torch_eval():
            raptor(obs_t)

        t_pt = timeit(torch_eval, repeat=5, number=number, sync=sync)
        t_fp = None
        if fp is not None:
            fp.reset()

            def fp_eval():
                fp.evaluate_step(obs)

            t_fp = timeit(fp_eval, repeat=5, number=number)
        rows.append((f"evaluate step, batch {batch}", t_pt, t_cpp, t_fp))

    print(f"\n{'':<36}{'PyTorch':>12}{'rl-tools C++':>14}{'numpy (fp)':>12}{'PyTorch/C++':>13}")
    for name, a, b, c in rows:
        c_text = f"{c * 1e3:9.3f} ms" if c is not None else " " * 12
        print(f"{name:<36}{a * 1e3:9.3f} ms{b * 1e3:11.3f} ms{c_text}{a / b:12.2f}x")
    print("\nratio < 1: PyTorch faster than rl-tools' generic CPU backend (single-threaded, no BLAS).")


if __name__ == "__main__":
    main()
