"""`eyas parity`: run a checkpoint through PyTorch and through rl-tools' own C++ and report the differences.

Compares, on identical 500 x 64 sequences (random, or given), the outputs, rl-tools' MSE loss, dL/d(input),
every parameter gradient, and a short Adam trajectory; prints a table and exits non-zero when any
difference exceeds its tolerance.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import numpy as np
import torch

from eyas.cli_args import ArgumentParser, between, finite_float, run_command
from eyas.bridge import chain_for
from eyas.errors import UsageError
from eyas.model import RLTOOLS_PARAMETER_NAMES, StudentPolicy
from eyas.optim import RLToolsAdam

SEQUENCE_LENGTH, BATCH_SIZE = 500, 64
GRADIENTS = tuple(f"grad {name}" for name in RLTOOLS_PARAMETER_NAMES)
ABSOLUTE = ("output",)  # rows whose tolerance bounds the absolute error; the others bound max |diff| / max |C++|
# float32: the largest error of each row observed by benchmarks/parity_errors.py over the released RAPTOR checkpoint
# (4 input seeds) and 36 random students (22 and 26 observations, random h0, 0 / 0.2 % / 1 % resets per step);
# "adam" after 10 steps (13 sources) and after 100 (RAPTOR and 3 students). h0's gradient is zero on both sides
# (rl-tools never trains it), so its row is exact.
FLOAT32_OBSERVED = {"output": 1.311e-6, "loss": 3.363e-5, "d_input": 5.182e-7, "grad 0.weights": 4.756e-6,
                    "grad 0.biases": 5.102e-6, "grad 1.weights_input": 5.253e-6, "grad 1.biases_input": 8.432e-7,
                    "grad 1.weights_hidden": 8.151e-6, "grad 1.biases_hidden": 9.439e-7,
                    "grad 1.initial_hidden_state": 0.0, "grad 2.weights": 7.185e-6, "grad 2.biases": 7.295e-6}
ADAM_FLOAT32_OBSERVED = {10: 4.024e-7, 100: 1.012e-6}  # steps -> largest error after that many steps
MARGIN = 10  # tolerance = MARGIN x observed, rounded down to two significant digits


def with_margin(observed: float) -> float:
    """``MARGIN`` x ``observed``, rounded down to two significant digits (so never more than ``MARGIN`` x)."""
    value = MARGIN * observed
    if value == 0:
        return 0.0
    unit = 10.0 ** (math.floor(math.log10(value)) - 1)
    return float(f"{math.floor(value / unit) * unit:.1e}")  # the decimal figure, not its float neighbour


# float64: parity_tests/ (every row agrees to ~1e-16 relative; 1e-9 leaves room for 500-step accumulations)
TOLERANCE = {
    "float64": {"output": 1e-10, "loss": 1e-9, "d_input": 1e-9, **dict.fromkeys(GRADIENTS, 1e-9), "adam": 1e-9},
    "float32": {quantity: with_margin(error) for quantity, error in FLOAT32_OBSERVED.items()}
               | {"adam": with_margin(ADAM_FLOAT32_OBSERVED[10])},
}
MAX_ADAM_STEPS = max(ADAM_FLOAT32_OBSERVED)  # the longest trajectory a float32 tolerance was measured for


def adam_tolerance(dtype: str, steps: int) -> float:
    """The "adam" row's tolerance after ``steps`` steps: float32 from the observation at the nearest measured
    count at or above ``steps`` (the error grows with the steps, ~ steps^0.4)."""
    if dtype == "float64":
        return TOLERANCE["float64"]["adam"]
    if not 0 < steps <= MAX_ADAM_STEPS:
        raise ValueError(f"float32 Adam tolerances are measured for 1 to {MAX_ADAM_STEPS} steps, not {steps}")
    return with_margin(ADAM_FLOAT32_OBSERVED[min(n for n in ADAM_FLOAT32_OBSERVED if n >= steps)])


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


def _adam_parameters(policy: StudentPolicy, batches, learning_rate: float, cpp_policy: StudentPolicy | None):
    """Per step, (PyTorch parameters, rl-tools parameters) as flat float64 vectors: copies of ``policy`` trained on
    the same ``batches`` by `RLToolsAdam` and by rl-tools' own training step."""
    dtype = policy.initial_hidden_state.dtype
    torch_policy = StudentPolicy(policy.num_obs, policy.num_actions, policy.hidden_dim, dtype=dtype)
    torch_policy.load_rltools_parameters(policy.rltools_parameters())
    chain = chain_for(cpp_policy or policy, SEQUENCE_LENGTH, BATCH_SIZE, dtype=dtype)
    optimizer = RLToolsAdam(torch_policy.parameters(), lr=learning_rate)
    for x, y, reset in batches:
        optimizer.zero_grad()
        torch_policy.reset()
        torch.nn.functional.mse_loss(torch_policy(x, reset), y).backward()
        optimizer.step()
        chain.train_step(x.numpy(), y.numpy(), None if reset is None else reset.numpy(), learning_rate)
        cpp = chain.get_parameters()
        ours = torch_policy.rltools_parameters()
        yield (np.concatenate([ours[k].detach().double().numpy().ravel() for k in cpp]),
               np.concatenate([np.asarray(cpp[k], np.float64).ravel() for k in cpp]))


def adam_trajectory(policy: StudentPolicy, batches, learning_rate: float = 1e-4, cpp_policy: StudentPolicy | None = None):
    """Train copies of ``policy`` in PyTorch (RLToolsAdam) and in rl-tools on the same ``batches``
    ((x, y, reset) tensors of shape 500 x 64) and return, per step, the max abs parameter difference
    relative to the largest parameter magnitude. ``cpp_policy`` (default: ``policy``) seeds the C++ side."""
    return np.array([_errors(ours, cpp)[1] for ours, cpp in _adam_parameters(policy, batches, learning_rate, cpp_policy)])


def random_batches(num_obs: int, dtype, n: int, seed: int, reset_prob: float = 2e-3):
    """Observations ~ N(0,1), targets ~ N(0, 0.5²), ~1 episode start per 500 steps and sequence."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x = torch.randn(SEQUENCE_LENGTH, BATCH_SIZE, num_obs, generator=g, dtype=dtype)
        y = 0.5 * torch.randn(SEQUENCE_LENGTH, BATCH_SIZE, 4, generator=g, dtype=dtype)
        reset = torch.rand(SEQUENCE_LENGTH, BATCH_SIZE, generator=g) < reset_prob
        yield x, y, reset


def measure(policy: StudentPolicy, x: torch.Tensor, y: torch.Tensor, reset: torch.Tensor | None,
            adam_steps: int = 10, cpp_policy: StudentPolicy | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every compared quantity (the keys of `TOLERANCE`) as (PyTorch value, rl-tools value); "adam" holds the
    parameters after each of ``adam_steps`` steps. ``cpp_policy`` lets a test feed a different network to C++."""
    chain = chain_for(cpp_policy or policy, SEQUENCE_LENGTH, BATCH_SIZE)
    xn, yn = x.numpy(), y.numpy()
    out_c = chain.forward(xn, None if reset is None else reset.numpy())
    loss_c = chain.mse(out_c, yn)
    dx_c = chain.backward(chain.mse_gradient(out_c, yn))
    grads_c = chain.get_gradients()

    out, loss, dx, grads = torch_loss_and_grads(policy, x, y, reset)
    pairs = {"output": (out.numpy(), out_c), "loss": (loss.numpy(), np.array(loss_c)), "d_input": (dx.numpy(), dx_c)}
    pairs |= {f"grad {name}": (grad.numpy(), grads_c[name]) for name, grad in grads.items()}
    policy.zero_grad(set_to_none=True)
    if adam_steps:
        batches = random_batches(policy.num_obs, policy.initial_hidden_state.dtype, adam_steps, seed=7)
        steps = list(_adam_parameters(policy, batches, 1e-4, cpp_policy))
        pairs["adam"] = (np.stack([s[0] for s in steps]), np.stack([s[1] for s in steps]))
    return pairs


def rows(measured: dict[str, tuple[np.ndarray, np.ndarray]], dtype: str) -> list[Row]:
    """The parity table of `measure`'s quantities against ``TOLERANCE[dtype]``."""
    out = []
    for quantity, (ours, cpp) in measured.items():
        kind = "abs" if quantity in ABSOLUTE else "rel"
        if quantity == "adam":
            out.append(Row(f"params after {len(cpp)} Adam steps", *_errors(ours, cpp), adam_tolerance(dtype, len(cpp)),
                           kind))
        else:
            out.append(Row(quantity, *_errors(ours, cpp), TOLERANCE[dtype][quantity], kind))
    return out


def compare(policy: StudentPolicy, x: torch.Tensor, y: torch.Tensor, reset: torch.Tensor | None,
            adam_steps: int = 10, cpp_policy: StudentPolicy | None = None) -> list[Row]:
    """All parity rows for the policy's dtype."""
    dtype = "float64" if policy.initial_hidden_state.dtype == torch.float64 else "float32"
    return rows(measure(policy, x, y, reset, adam_steps, cpp_policy), dtype)


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
        tol = f"{r.tolerance:.1e} {r.kind}"
        abs_text = "" if np.isnan(r.max_abs) else f"{r.max_abs:12.3e}"
        lines.append(f"  {r.quantity:<36}{abs_text:>12}{r.max_rel:12.3e}{tol:>14}  {'yes' if r.ok else 'NO'}")
    return "\n".join(lines)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="eyas parity", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="rl-tools HDF5 checkpoint (e.g. RAPTOR's checkpoint.h5)")
    parser.add_argument("--sequences", help=".npz with 'input' (500, 64, obs), optional 'target' (500, 64, 4) "
                                            "and 'reset' (500, 64) bool; default: random")
    parser.add_argument("--dtype", choices=["float32", "float64", "both"], default="both")
    parser.add_argument("--adam_steps", type=between(0, MAX_ADAM_STEPS), default=10,
                        help=f"Adam steps compared (0 to skip; at most {MAX_ADAM_STEPS})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--perturb_cpp", type=finite_float(), default=0.0,
                        help="add this to the C++ side's output bias (to see the check fail)")
    return parser


SEQUENCE_ARRAYS = {"input": "obs", "target": "actions", "reset": None}  # name -> width of its last axis


def read_sequences(path: str, num_obs: int, num_actions: int) -> dict[str, np.ndarray]:
    """The arrays of a --sequences file, checked: an .npz (read without unpickling) holding 'input' and optionally
    'target' and 'reset', nothing else, of the shapes `SEQUENCE_ARRAYS` names, finite, 'reset' boolean."""
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, AttributeError, TypeError) as e:
        why = "not an .npz archive" if isinstance(e, AttributeError) else (str(e).splitlines() or [""])[0][:160]
        raise UsageError(f"--sequences {path}: cannot read it as an .npz of arrays ({why})") from e
    unknown = sorted(set(arrays) - set(SEQUENCE_ARRAYS))
    if "input" not in arrays or unknown:
        raise UsageError(f"--sequences {path}: holds {sorted(arrays)}; expected 'input' and optionally 'target', "
                         f"'reset'")
    widths = {"obs": num_obs, "actions": num_actions}
    for name, value in arrays.items():
        shape = (SEQUENCE_LENGTH, BATCH_SIZE) + ((widths[SEQUENCE_ARRAYS[name]],) if SEQUENCE_ARRAYS[name] else ())
        if value.shape != shape:
            raise UsageError(f"--sequences {path}: '{name}' has shape {value.shape}, expected {shape}")
        if name == "reset" and value.dtype != np.bool_:
            raise UsageError(f"--sequences {path}: 'reset' has dtype {value.dtype}, expected bool")
        if name != "reset" and not (np.issubdtype(value.dtype, np.floating) and np.isfinite(value).all()):
            raise UsageError(f"--sequences {path}: '{name}' is not finite floating point (dtype {value.dtype}, "
                             f"NaN or inf)")
    return arrays


def _inputs(args, policy: StudentPolicy, sequences: dict | None):
    """(x, y, reset) in the policy's dtype: from --sequences, else seeded noise (targets too where none given)."""
    dtype = policy.initial_hidden_state.dtype
    if sequences is not None:
        x = torch.as_tensor(sequences["input"], dtype=dtype)
        y = torch.as_tensor(sequences["target"], dtype=dtype) if "target" in sequences else None
        reset = torch.as_tensor(sequences["reset"]) if "reset" in sequences else None
    else:
        g = torch.Generator().manual_seed(args.seed)
        x = torch.randn(SEQUENCE_LENGTH, BATCH_SIZE, policy.num_obs, generator=g, dtype=dtype)
        y = None
        reset = torch.rand(SEQUENCE_LENGTH, BATCH_SIZE, generator=g) < 2e-3
    if y is None:
        g = torch.Generator().manual_seed(args.seed + 1)
        y = 0.5 * torch.randn(SEQUENCE_LENGTH, BATCH_SIZE, policy.num_actions, generator=g, dtype=dtype)
    return x, y, reset


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from eyas.rltools_h5 import load_rltools_h5

    torch.set_num_threads(1)
    policies = {name: load_rltools_h5(args.checkpoint, dtype=getattr(torch, name))
                for name in (["float64", "float32"] if args.dtype == "both" else [args.dtype])}
    first = next(iter(policies.values()))
    sequences = read_sequences(args.sequences, first.num_obs, first.num_actions) if args.sequences else None
    all_ok = True
    for dtype_name, policy in policies.items():
        cpp_policy = None
        if args.perturb_cpp:
            cpp_policy = load_rltools_h5(args.checkpoint, dtype=getattr(torch, dtype_name))
            with torch.no_grad():
                cpp_policy.output_layer.bias.add_(args.perturb_cpp)
        x, y, reset = _inputs(args, policy, sequences)
        table = compare(policy, x, y, reset, adam_steps=args.adam_steps, cpp_policy=cpp_policy)
        n_resets = 0 if reset is None else int(reset.sum())
        print(format_table(table, f"\n{args.checkpoint}: PyTorch vs rl-tools C++, {dtype_name}, "
                                  f"{SEQUENCE_LENGTH}x{BATCH_SIZE} sequences, {n_resets} in-sequence resets"))
        all_ok &= all(r.ok for r in table)
    print("\nparity: " + ("OK" if all_ok else "FAILED (a difference exceeds its tolerance)"))
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(run_command("parity", main, sys.argv[1:]))
