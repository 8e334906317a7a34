"""`eyas parity`: run a checkpoint through PyTorch and through rl-tools' own C++ and report the differences.

Compares, on identical 500 x 64 sequences (random, or given), the outputs, rl-tools' MSE loss, dL/d(input),
every parameter gradient, and a short Adam trajectory; prints a table and exits non-zero when any
difference exceeds its tolerance.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import torch

from eyas.cli import ArgumentParser
from eyas.bridge import chain_for
from eyas.model import StudentPolicy
from eyas.optim import RLToolsAdam

SEQUENCE_LENGTH, BATCH_SIZE = 500, 64
# Relative tolerances are relative to max |C++ value|. float64: see parity_tests/. float32 "relative":
# the a-priori worst case of a float32 sum of N = 500*64 terms, N*u = 32000 * 6e-8 ~ 2e-3 (the tests use a
# tighter, relational bound); "adam": the 100-step bound derived in parity_tests/test_adam.py.
TOLERANCE = {
    "float64": {"output": 1e-10, "relative": 1e-9, "adam": 1e-9},
    "float32": {"output": 1e-5, "relative": 2e-3, "adam": 1e-5},
}


@dataclass
class Row:
    quantity: str
    max_abs: float
    max_rel: float
    tolerance: float
    kind: str  # "abs" or "rel": which error the tolerance bounds

    @property
    def ok(self) -> bool:
        err = self.max_abs if self.kind == "abs" else self.max_rel
        return bool(np.isfinite(err) and err <= self.tolerance)


def _errors(a, b) -> tuple[float, float]:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64).reshape(a.shape)
    abs_err = float(np.abs(a - b).max()) if a.size else 0.0
    scale = float(np.abs(b).max()) if b.size else 0.0
    rel = abs_err / scale if scale > 0 else (0.0 if abs_err == 0 else float("inf"))
    return abs_err, rel


def adam_trajectory(policy: StudentPolicy, batches, learning_rate: float = 1e-4, cpp_policy: StudentPolicy | None = None):
    """Train copies of ``policy`` in PyTorch (RLToolsAdam) and in rl-tools on the same ``batches``
    ((x, y, reset) tensors of shape 500 x 64) and return, per step, the max abs parameter difference
    relative to the largest parameter magnitude. ``cpp_policy`` (default: ``policy``) seeds the C++ side."""
    dtype = policy.initial_hidden_state.dtype
    torch_policy = StudentPolicy(policy.num_obs, policy.num_actions, policy.hidden_dim, dtype=dtype)
    torch_policy.load_rltools_parameters(policy.rltools_parameters())
    chain = chain_for(cpp_policy or policy, SEQUENCE_LENGTH, BATCH_SIZE, dtype=dtype)
    optimizer = RLToolsAdam(torch_policy.parameters(), lr=learning_rate)
    curve = []
    for x, y, reset in batches:
        optimizer.zero_grad()
        torch_policy.reset()
        loss = torch.nn.functional.mse_loss(torch_policy(x, reset), y)
        loss.backward()
        optimizer.step()
        chain.train_step(x.numpy(), y.numpy(), None if reset is None else reset.numpy(), learning_rate)
        cpp = chain.get_parameters()
        worst = 0.0
        scale = max(float(np.abs(v).max()) for v in cpp.values())
        for name, p in torch_policy.rltools_parameters().items():
            worst = max(worst, float(np.abs(p.detach().numpy().reshape(cpp[name].shape) - cpp[name]).max()))
        curve.append(worst / scale)
    return np.array(curve)


def random_batches(num_obs: int, dtype, n: int, seed: int, reset_prob: float = 2e-3):
    """Observations ~ N(0,1), targets ~ N(0, 0.5²), ~1 episode start per 500 steps and sequence."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x = torch.randn(SEQUENCE_LENGTH, BATCH_SIZE, num_obs, generator=g, dtype=dtype)
        y = 0.5 * torch.randn(SEQUENCE_LENGTH, BATCH_SIZE, 4, generator=g, dtype=dtype)
        reset = torch.rand(SEQUENCE_LENGTH, BATCH_SIZE, generator=g) < reset_prob
        yield x, y, reset


def compare(policy: StudentPolicy, x: torch.Tensor, y: torch.Tensor, reset: torch.Tensor | None,
            adam_steps: int = 10, cpp_policy: StudentPolicy | None = None) -> list[Row]:
    """All parity rows for one dtype. ``cpp_policy`` lets a test feed a different network to C++."""
    dtype = "float64" if policy.initial_hidden_state.dtype == torch.float64 else "float32"
    tol = TOLERANCE[dtype]
    chain = chain_for(cpp_policy or policy, SEQUENCE_LENGTH, BATCH_SIZE)
    xn, yn = x.numpy(), y.numpy()
    rn = None if reset is None else reset.numpy()
    out_c = chain.forward(xn, rn)
    loss_c = chain.mse(out_c, yn)
    dx_c = chain.backward(chain.mse_gradient(out_c, yn))
    grads_c = chain.get_gradients()

    out, loss, dx, grads = torch_loss_and_grads(policy, x, y, reset)
    rows = [Row("output", *_errors(out.numpy(), out_c), tol["output"], "abs"),
            Row("loss", *_errors(loss.numpy(), np.array(loss_c)), tol["relative"], "rel"),
            Row("d_input", *_errors(dx.numpy(), dx_c), tol["relative"], "rel")]
    for name, grad in grads.items():
        rows.append(Row(f"grad {name}", *_errors(grad.numpy(), grads_c[name]), tol["relative"], "rel"))
    policy.zero_grad(set_to_none=True)
    if adam_steps:
        batches = list(random_batches(policy.num_obs, policy.initial_hidden_state.dtype, adam_steps, seed=7))
        curve = adam_trajectory(policy, batches, cpp_policy=cpp_policy)
        rows.append(Row(f"params after {adam_steps} Adam steps", float("nan"), float(curve.max()), tol["adam"], "rel"))
    return rows


def torch_loss_and_grads(policy, x, y, reset):
    """PyTorch forward from the initial state, rl-tools' MSE, backward: (output, loss, dL/dx, {name: grad})."""
    xg = x.clone().requires_grad_(True)
    policy.zero_grad(set_to_none=True)
    policy.reset()
    out = policy(xg, reset)
    loss = torch.nn.functional.mse_loss(out, y)
    loss.backward()
    grads = {k: v.grad.detach().clone() for k, v in policy.rltools_parameters().items()}
    return out.detach(), loss.detach(), xg.grad.detach(), grads


def format_table(rows: list[Row], title: str) -> str:
    lines = [title, f"  {'quantity':<36}{'max abs':>12}{'max rel':>12}{'tolerance':>14}  ok"]
    for r in rows:
        tol = f"{r.tolerance:.0e} {r.kind}"
        abs_text = "" if np.isnan(r.max_abs) else f"{r.max_abs:12.3e}"
        lines.append(f"  {r.quantity:<36}{abs_text:>12}{r.max_rel:12.3e}{tol:>14}  {'yes' if r.ok else 'NO'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="eyas parity", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="rl-tools HDF5 checkpoint (e.g. RAPTOR's checkpoint.h5)")
    parser.add_argument("--sequences", help=".npz with 'input' (500, 64, obs), optional 'target' (500, 64, 4) "
                                            "and 'reset' (500, 64) bool; default: random")
    parser.add_argument("--dtype", choices=["float32", "float64", "both"], default="both")
    parser.add_argument("--adam_steps", type=int, default=10, help="Adam steps compared (0 to skip)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--perturb_cpp", type=float, default=0.0,
                        help="add this to the C++ side's output bias (to see the check fail)")
    args = parser.parse_args(argv)

    from eyas.rltools_h5 import load_rltools_h5

    torch.set_num_threads(1)
    all_ok = True
    for dtype_name in (["float64", "float32"] if args.dtype == "both" else [args.dtype]):
        dtype = torch.float64 if dtype_name == "float64" else torch.float32
        policy = load_rltools_h5(args.checkpoint, dtype=dtype)
        cpp_policy = None
        if args.perturb_cpp:
            cpp_policy = load_rltools_h5(args.checkpoint, dtype=dtype)
            with torch.no_grad():
                cpp_policy.output_layer.bias.add_(args.perturb_cpp)
        if args.sequences:
            data = np.load(args.sequences)
            x = torch.as_tensor(data["input"], dtype=dtype)
            if tuple(x.shape) != (SEQUENCE_LENGTH, BATCH_SIZE, policy.num_obs):
                print(f"eyas parity: --sequences input has shape {tuple(x.shape)}, expected "
                      f"({SEQUENCE_LENGTH}, {BATCH_SIZE}, {policy.num_obs})", file=sys.stderr)
                return 2
            y = torch.as_tensor(data["target"], dtype=dtype) if "target" in data else None
            reset = torch.as_tensor(data["reset"], dtype=torch.bool) if "reset" in data else None
        else:
            g = torch.Generator().manual_seed(args.seed)
            x = torch.randn(SEQUENCE_LENGTH, BATCH_SIZE, policy.num_obs, generator=g, dtype=dtype)
            y = None
            reset = torch.rand(SEQUENCE_LENGTH, BATCH_SIZE, generator=g) < 2e-3
        if y is None:
            g = torch.Generator().manual_seed(args.seed + 1)
            y = 0.5 * torch.randn(SEQUENCE_LENGTH, BATCH_SIZE, policy.num_actions, generator=g, dtype=dtype)
        rows = compare(policy, x, y, reset, adam_steps=args.adam_steps, cpp_policy=cpp_policy)
        n_resets = 0 if reset is None else int(reset.sum())
        print(format_table(rows, f"\n{args.checkpoint}: PyTorch vs rl-tools C++, {dtype_name}, "
                                 f"{SEQUENCE_LENGTH}x{BATCH_SIZE} sequences, {n_resets} in-sequence resets"))
        all_ok &= all(r.ok for r in rows)
    print("\nparity: " + ("OK" if all_ok else "FAILED (a difference exceeds its tolerance)"))
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
