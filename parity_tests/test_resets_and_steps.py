"""Reset semantics (no leakage across resets, gradients with resets) and step-wise evaluation."""
import numpy as np
import pytest
import torch

from parity_helpers import bridge_loss_and_grads, chain_for, random_policy, random_sequences, torch_loss_and_grads


def test_no_leakage_across_resets_both_implementations():
    """Changing inputs before a reset must not change any output from the reset on, in either side."""
    policy = random_policy(22, torch.float64, seed=50)
    x, y, _ = random_sequences(32, 8, 22, torch.float64, seed=51)
    reset = torch.zeros(32, 8, dtype=torch.bool)
    reset[13, :] = True
    reset[20, 3] = True
    x2 = x.clone()
    x2[:13] = torch.randn(13, 8, 22, dtype=torch.float64) * 3
    chain = chain_for(policy, 32, 8)
    a_cpp = chain.forward(x.numpy(), reset.numpy())
    b_cpp = chain.forward(x2.numpy(), reset.numpy())
    with torch.no_grad():
        policy.reset()
        a_pt = policy(x, reset).numpy()
        policy.reset()
        b_pt = policy(x2, reset).numpy()
    for a, b in ((a_cpp, b_cpp), (a_pt, b_pt)):
        assert np.abs(a[:13] - b[:13]).max() > 1e-3  # the perturbation is visible before the reset
        assert np.array_equal(a[13:], b[13:])  # and invisible after it, bit for bit
    # gradients do not leak backwards either: dL/dx before a reset ignores targets after it
    y2 = y.clone()
    y2[13:] += 1.0
    _, _, dx1, _ = bridge_loss_and_grads(chain, x, y, reset)
    _, _, dx2, _ = bridge_loss_and_grads(chain, x, y2, reset)
    _, _, dx1_t, _ = torch_loss_and_grads(policy, x, y, reset)
    _, _, dx2_t, _ = torch_loss_and_grads(policy, x, y2, reset)
    assert np.array_equal(dx1[:13], dx2[:13]) and np.abs(dx1[13:] - dx2[13:]).max() > 1e-6
    assert torch.equal(dx1_t[:13], dx2_t[:13])


def test_reset_at_every_step_is_a_feedforward_network():
    """All-reset mask: each output depends only on its own input and h0."""
    policy = random_policy(22, torch.float64, seed=52)
    x, _, _ = random_sequences(32, 8, 22, torch.float64, seed=53)
    reset = torch.ones(32, 8, dtype=torch.bool)
    out = chain_for(policy, 32, 8).forward(x.numpy(), reset.numpy())
    with torch.no_grad():
        single = np.stack([policy.act(x[t : t + 1])[0][0].numpy() for t in range(32)])
    assert np.abs(out - single).max() <= 1e-12


def test_stepwise_loop_equals_sequence_forward():
    policy = random_policy(22, torch.float64, seed=54)
    x, _, _ = random_sequences(32, 8, 22, torch.float64, seed=55)
    chain = chain_for(policy, 32, 8)
    seq = chain.forward(x.numpy())
    chain.reset()
    policy.reset(batch_size=8)
    steps_cpp, steps_pt = [], []
    with torch.no_grad():
        for t in range(32):
            steps_cpp.append(chain.evaluate_step(x[t].numpy()))
            steps_pt.append(policy(x[t]).numpy())
            if t == 30:  # before rl-tools' auto reset at step SEQUENCE_LENGTH = 32
                assert np.abs(policy.hidden_states[0].numpy() - chain.hidden_state()).max() <= 1e-12
    assert np.abs(np.stack(steps_cpp) - seq).max() <= 1e-12
    assert np.abs(np.stack(steps_pt) - seq).max() <= 1e-12
    # after SEQUENCE_LENGTH steps rl-tools has returned the state to h0
    assert np.abs(chain.hidden_state() - policy.initial_hidden_state.detach().numpy()).max() == 0


@pytest.mark.parametrize("chunks", [[1] * 23, [5, 1, 9, 8], [23]])
def test_auto_reset_after_sequence_length_steps(chunks):
    """rl-tools' evaluate_step returns to h0 every SEQUENCE_LENGTH (here 7) steps; StudentPolicy does the
    same with auto_reset_steps=7, whether fed step by step or in chunks."""
    policy = random_policy(22, torch.float64, seed=56)
    policy.auto_reset_steps = 7
    x, _, _ = random_sequences(23, 3, 22, torch.float64, seed=57)
    chain = chain_for(policy, 7, 3)
    chain.reset()
    expected = np.stack([chain.evaluate_step(x[t].numpy()) for t in range(23)])
    policy.reset(batch_size=3)
    outs, t = [], 0
    with torch.no_grad():
        for n in chunks:
            outs.append(policy(x[t : t + n]).numpy())
            t += n
    assert np.abs(np.concatenate(outs) - expected).max() <= 1e-12
    # without auto reset the outputs differ after step 7 (the option matters)
    chain.reset()
    no_auto = np.stack([chain.evaluate_step(x[t].numpy(), auto_reset=False) for t in range(23)])
    assert np.abs(no_auto[:7] - expected[:7]).max() == 0 and np.abs(no_auto[7:] - expected[7:]).max() > 1e-6


def test_partial_reset_by_dones():
    policy = random_policy(22, torch.float64, seed=58)
    x, _, _ = random_sequences(10, 4, 22, torch.float64, seed=59)
    dones = torch.tensor([False, True, False, True])
    reset = torch.zeros(10, 4, dtype=torch.bool)
    reset[5] = dones
    with torch.no_grad():
        policy.reset()
        expected = policy(x, reset)
        policy.reset(batch_size=4)
        policy(x[:5])
        policy.reset(dones=dones)
        got = policy(x[5:])
    assert torch.allclose(got, expected[5:], atol=1e-12, rtol=0)


def test_act_is_pure():
    policy = random_policy(22, torch.float64, seed=60)
    x, _, _ = random_sequences(4, 5, 22, torch.float64, seed=61)
    policy.reset(batch_size=5)
    with torch.no_grad():
        a, h = policy.act(x[0])
        assert policy.hidden_states is not None and torch.equal(policy.hidden_states,
                                                                policy.initial_hidden_state.expand(1, 5, 16))
        b, h2 = policy.act(x[1], h)
        policy(x[0])
        c = policy(x[1])
    assert h.shape == (1, 5, 16) and torch.allclose(b, c, atol=0, rtol=0)
