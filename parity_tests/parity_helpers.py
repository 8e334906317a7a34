"""Helpers for the parity tests: identical random weights and inputs on both sides."""
from __future__ import annotations

import numpy as np
import torch

from eyas import StudentPolicy
from eyas.bridge import chain_for
from eyas.parity import torch_loss_and_grads  # noqa: F401 (re-exported for the tests)

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def random_policy(num_obs: int = 22, dtype=torch.float64, seed: int = 0, gradient_mode: str = "rltools",
                  h0_std: float = 0.5) -> StudentPolicy:
    """rl-tools-initialised policy; a non-zero initial hidden state (h0_std > 0) makes every h0-related
    gradient term visible (the released RAPTOR checkpoint has h0 = 0, which hides some of them)."""
    g = torch.Generator().manual_seed(seed)
    policy = StudentPolicy(num_obs, 4, dtype=dtype, gradient_mode=gradient_mode, generator=g)
    with torch.no_grad():
        policy.initial_hidden_state.copy_(torch.randn(16, generator=g, dtype=dtype) * h0_std)
    return policy


def random_sequences(seq: int, batch: int, num_obs: int, dtype, seed: int, reset_prob: float = 0.0):
    """Observations ~ N(0, 1), targets ~ N(0, 0.5²) and a reset mask with the given per-step probability."""
    g = torch.Generator().manual_seed(seed + 1000)
    x = torch.randn(seq, batch, num_obs, generator=g, dtype=dtype)
    y = 0.5 * torch.randn(seq, batch, 4, generator=g, dtype=dtype)
    reset = torch.rand(seq, batch, generator=g) < reset_prob if reset_prob > 0 else None
    return x, y, reset


def bridge_loss_and_grads(chain, x, y, reset):
    """rl-tools forward (ResetMode when a mask is given), its MSE and gradient, backward_full."""
    xn, yn = x.numpy(), y.numpy()
    out = chain.forward(xn, None if reset is None else reset.numpy())
    loss = chain.mse(out, yn)
    d_input = chain.backward(chain.mse_gradient(out, yn))
    return out, loss, d_input, chain.get_gradients()


__all__ = ["random_policy", "random_sequences", "torch_loss_and_grads", "bridge_loss_and_grads", "chain_for",
           "DTYPES", "np", "U32", "U64"]

U32 = float(np.finfo(np.float32).eps) / 2  # unit round-off, 2^-24
U64 = float(np.finfo(np.float64).eps) / 2  # 2^-53
