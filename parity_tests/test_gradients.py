"""Gradients of rl-tools' MSE on identical 500 x 64 sequences: PyTorch (rl-tools mode) vs the bridge,
and exactly where rl-tools departs from exact autograd."""
import numpy as np
import pytest
import torch
from torch.autograd.gradcheck import GradcheckError

from parity_helpers import (U32, bridge_loss_and_grads, chain_for, random_policy, random_sequences,
                            torch_loss_and_grads)

NAMES = ["0.weights", "0.biases", "1.weights_input", "1.biases_input", "1.weights_hidden", "1.biases_hidden",
         "1.initial_hidden_state", "2.weights", "2.biases"]


def rel_err(a, b):
    """max |a - b| relative to the largest magnitude of b (0 when both are 0)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.abs(b).max()
    return 0.0 if scale == 0 and np.abs(a).max() == 0 else np.abs(a - b).max() / max(scale, 1e-300)


@pytest.mark.parametrize("num_obs", [22, 26])
@pytest.mark.parametrize("reset_prob", [0.0, 0.01])
def test_gradients_float64(num_obs, reset_prob):
    policy = random_policy(num_obs, torch.float64, seed=10 + num_obs)
    x, y, reset = random_sequences(500, 64, num_obs, torch.float64, seed=11, reset_prob=reset_prob)
    out_t, loss_t, dx_t, g_t = torch_loss_and_grads(policy, x, y, reset)
    out_b, loss_b, dx_b, g_b = bridge_loss_and_grads(chain_for(policy, 500, 64), x, y, reset)
    assert abs(loss_t.item() - loss_b) <= 1e-12 * abs(loss_b)
    assert rel_err(dx_t.numpy(), dx_b) <= 1e-9
    assert set(g_b) == set(NAMES)
    for name in NAMES:
        assert rel_err(g_t[name].numpy().reshape(g_b[name].shape), g_b[name]) <= 1e-9, name
    assert np.all(g_b["1.initial_hidden_state"] == 0)  # rl-tools never trains h0


@pytest.mark.parametrize("reset_prob", [0.0, 0.01])
def test_gradients_float32(reset_prob):
    """float32 tolerance, derived rather than tuned: both implementations round the same float64 value.
    With rl-tools' float64 result on the *same* float32 weights/inputs as the truth, PyTorch float32 must
    be (a) no less accurate than rl-tools float32 itself, up to a factor 2 (different summation orders
    give different but equally sized round-off), and therefore (b) within 3x that round-off of the C++
    float32 result (triangle inequality). The floor 64·u·scale covers tensors where rl-tools float32 is
    exact by luck (e.g. zeros). A wrong or missing term is O(scale) and fails both by orders of magnitude."""
    policy32 = random_policy(22, torch.float32, seed=20)
    x, y, reset = random_sequences(500, 64, 22, torch.float32, seed=21, reset_prob=reset_prob)
    policy64 = random_policy(22, torch.float64, seed=20)
    policy64.load_rltools_parameters({k: v.double() for k, v in policy32.rltools_parameters().items()})
    _, _, dx_t, g_t = torch_loss_and_grads(policy32, x, y, reset)
    _, _, dx_b, g_b = bridge_loss_and_grads(chain_for(policy32, 500, 64), x, y, reset)
    _, _, dx_ref, g_ref = bridge_loss_and_grads(chain_for(policy64, 500, 64), x.double(), y.double(),
                                                reset)
    pairs = [("d_input", dx_t.numpy(), dx_b, dx_ref)]
    pairs += [(n, g_t[n].numpy().reshape(g_b[n].shape), g_b[n], g_ref[n]) for n in NAMES]
    for name, torch32, cpp32, truth in pairs:
        scale = np.abs(truth).max()
        floor = 64 * U32 * scale
        err_cpp = np.abs(cpp32 - truth).max()
        err_torch = np.abs(torch32 - truth).max()
        assert err_torch <= 2 * err_cpp + floor, f"{name}: torch {err_torch:.2e} vs C++ {err_cpp:.2e}"
        assert np.abs(torch32 - cpp32).max() <= 3 * err_cpp + floor, name


def test_rltools_vs_exact_autograd_differences_are_exactly_the_documented_terms():
    """rl-tools mode = exact autograd minus (1) dL/dh0, (2) the step-0 W_hh term dpre_h[0]^T h0,
    (3) the b_hn term of samples reset at t > 0. Computed here independently from a naive autograd
    unroll with hooks, and compared with the bridge's gradients."""
    policy = random_policy(22, torch.float64, seed=30)
    x, y, reset = random_sequences(32, 8, 22, torch.float64, seed=31, reset_prob=0.05)
    assert reset[1:].any()
    # naive, per-step autograd unroll that records each step's hidden pre-activation gradient
    W_i, b_i = policy.gru.weight_ih_l0, policy.gru.bias_ih_l0
    W_h, b_h, h0 = policy.gru.weight_hh_l0, policy.gru.bias_hh_l0, policy.initial_hidden_state
    h, outs, pre_h, prevs = h0.expand(8, 16), [], [], []
    for t in range(32):
        h = torch.where(reset[t, :, None], h0.expand(8, 16), h)
        gi = torch.relu(policy.input_layer(x[t])) @ W_i.T + b_i
        gh = h @ W_h.T + b_h
        gh.retain_grad()
        pre_h.append(gh)
        prevs.append(h)
        r, z = torch.sigmoid(gi[:, :16] + gh[:, :16]), torch.sigmoid(gi[:, 16:32] + gh[:, 16:32])
        n = torch.tanh(gi[:, 32:] + r * gh[:, 32:])
        h = (1 - z) * n + z * h
        outs.append(policy.output_layer(h))
    loss = torch.nn.functional.mse_loss(torch.stack(outs), y)
    loss.backward()
    exact = {k: v.grad.clone() for k, v in policy.rltools_parameters().items()}
    # the documented departures
    expected = {k: v.clone() for k, v in exact.items()}
    expected["1.initial_hidden_state"].zero_()
    expected["1.weights_hidden"] -= pre_h[0].grad.T @ prevs[0].detach()
    for t in range(1, 32):
        rows = reset[t]
        expected["1.biases_hidden"][32:] -= pre_h[t].grad[rows, 32:].sum(0)
    _, _, _, g_cpp = bridge_loss_and_grads(chain_for(policy, 32, 8), x, y, reset)
    _, _, _, g_rl = torch_loss_and_grads(random_policy(22, torch.float64, seed=30), x, y, reset)
    for k in expected:
        np.testing.assert_allclose(g_cpp[k], expected[k].numpy().reshape(g_cpp[k].shape), rtol=0, atol=1e-14,
                                   err_msg=k)
        np.testing.assert_allclose(g_rl[k].numpy(), expected[k].numpy(), rtol=0, atol=1e-14, err_msg=k)
    # and the departures are real (not vanishing) for this h0 != 0 setup
    for k in ("1.initial_hidden_state", "1.weights_hidden", "1.biases_hidden"):
        assert (exact[k] - expected[k]).abs().max() > 1e-6, k


def test_exact_mode_passes_gradcheck():
    policy = random_policy(5, torch.float64, seed=40, gradient_mode="exact")
    x, _, reset = random_sequences(6, 3, 5, torch.float64, seed=41, reset_prob=0.3)
    params = list(policy.parameters())

    def f(x, *p):
        policy.reset()
        return policy(x, reset)

    assert torch.autograd.gradcheck(f, (x.requires_grad_(), *params), eps=1e-6, atol=1e-8)


def test_rltools_mode_fails_gradcheck_only_through_h0_terms():
    """Sanity of the claim above: rl-tools gradients are exact w.r.t. the input and input-side weights."""
    policy = random_policy(5, torch.float64, seed=42, gradient_mode="rltools")
    x, _, reset = random_sequences(6, 3, 5, torch.float64, seed=43, reset_prob=0.3)

    def f(x, w_ih, w_out):
        policy.reset()
        return policy(x, reset)

    inputs = (x.requires_grad_(), policy.gru.weight_ih_l0, policy.output_layer.weight)
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-8)
    with pytest.raises(GradcheckError):
        torch.autograd.gradcheck(lambda w: (policy.reset(), policy(x, reset))[1], (policy.gru.weight_hh_l0,),
                                 eps=1e-6, atol=1e-8)
