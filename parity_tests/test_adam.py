"""rl-tools' Adam: one step exactly, and 100 consecutive training steps on 500 x 64 batches."""
import json
import os

import numpy as np
import pytest
import torch

from eyas.optim import RLToolsAdam
from eyas.parity import adam_trajectory, random_batches
from parity_helpers import chain_for, random_policy


def test_single_step_matches_bridge_and_differs_from_torch_adam():
    """Gradients small enough that rl-tools' max(v_hat, eps_sqrt) clamp is active show why
    torch.optim.Adam cannot be used: it would step ~30x further."""
    policy = random_policy(22, torch.float64, seed=70)
    chain = chain_for(policy, 7, 3)
    x = torch.randn(7, 3, 22, dtype=torch.float64)
    out = chain.forward(x.numpy())
    d_out = 1e-4 * np.random.default_rng(0).standard_normal(out.shape)  # tiny gradients
    chain.backward(d_out)
    grads = chain.get_gradients()
    before = chain.get_parameters()
    chain.adam_step(1e-4)
    after = chain.get_parameters()

    ours = random_policy(22, torch.float64, seed=70)
    theirs = random_policy(22, torch.float64, seed=70)
    for name, p_ours in ours.rltools_parameters().items():
        p_ours.grad = torch.from_numpy(grads[name].reshape(p_ours.shape).copy())
        theirs.rltools_parameters()[name].grad = p_ours.grad.clone()
    RLToolsAdam(ours.parameters(), lr=1e-4).step()
    torch.optim.Adam(theirs.parameters(), lr=1e-4, eps=1e-7).step()
    worst_ours = worst_torch = 0.0
    for name, p in ours.rltools_parameters().items():
        delta_cpp = after[name] - before[name]
        worst_ours = max(worst_ours, np.abs(p.detach().numpy().reshape(after[name].shape) - after[name]).max())
        q = theirs.rltools_parameters()[name].detach().numpy().reshape(after[name].shape)
        worst_torch = max(worst_torch, np.abs(q - after[name]).max() / max(np.abs(delta_cpp).max(), 1e-300))
    assert worst_ours <= 1e-15
    assert worst_torch > 1.0  # torch's step is off by more than the whole rl-tools step


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_100_step_trajectory(dtype):
    """Both sides train from identical weights on identical batches (with resets) for 100 steps; the
    parameters are compared after every step.
    float64: each step agrees to ~1e-16 and lr = 1e-4 steps cannot amplify that; 1e-9 relative.
    float32: per-step gradient differences are <= ~1e-5 relative (test_gradients); an Adam step moves a
    parameter by at most ~lr·|m_hat|/sqrt(v_hat) <= ~lr (a few lr in rare sign flips), and a relative
    gradient error e changes that step by <= ~2e·lr. Over 100 steps: <= 100 · 2 · 1e-5 · 1e-4 = 2e-7
    absolute, i.e. ~1e-6 relative to O(0.2..1) parameters; we allow 10x that (1e-5) for steps where
    tiny m/sqrt(v) ratios are sensitive, still far below one lr step (1e-4) that a real difference makes."""
    policy = random_policy(22, dtype, seed=80)
    batches = list(random_batches(22, dtype, 100, seed=81))
    curve = adam_trajectory(policy, batches)
    bound = 1e-9 if dtype == torch.float64 else 1e-5
    assert curve.shape == (100,)
    assert np.all(curve <= bound), f"max divergence {curve.max():.3e} at step {int(curve.argmax())}"
    out = os.environ.get("EYAS_DIVERGENCE_DIR")
    if out:  # record the curve (benchmarks/README.md reports it)
        with open(os.path.join(out, f"adam_divergence_{str(dtype).split('.')[-1]}.json"), "w") as f:
            json.dump(curve.tolist(), f)
    print(f"{dtype}: divergence after 1/10/100 steps: {curve[0]:.2e} / {curve[9]:.2e} / {curve[-1]:.2e}")
