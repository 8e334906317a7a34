"""Property-based parity (hypothesis) over seeds, compiled shapes, observation widths and reset patterns,
and a cross-check against a third implementation: foundation_policy's numpy reader."""
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eyas
from eyas.bridge import available_shapes
from parity_helpers import bridge_loss_and_grads, chain_for, random_policy, torch_loss_and_grads

# small compiled shapes only (the 500 x 64 ones are covered by test_forward / test_gradients)
SHAPES = [s for s in available_shapes() if s[2] * s[3] <= 1000 and s[2] > 1]
F64_SHAPES = [s for s in SHAPES if s[0] == "float64"]


def reset_masks(seq, batch):
    """Reset patterns: none, random density, all, only step 0, one column, every k-th step."""
    return st.one_of(
        st.none(),
        st.floats(0.0, 1.0).map(lambda p: ("random", p)),
        st.just(("all", None)),
        st.just(("first", None)),
        st.integers(0, batch - 1).map(lambda b: ("column", b)),
        st.integers(1, max(1, seq - 1)).map(lambda k: ("every", k)),
    )


def build_mask(spec, seq, batch, rng):
    if spec is None:
        return None
    kind, arg = spec
    m = np.zeros((seq, batch), bool)
    if kind == "random":
        m = rng.random((seq, batch)) < arg
    elif kind == "all":
        m[:] = True
    elif kind == "first":
        m[0] = True
    elif kind == "column":
        m[:, arg] = True
    elif kind == "every":
        m[::arg] = True
    return torch.from_numpy(m)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=st.sampled_from(F64_SHAPES), seed=st.integers(0, 2**31 - 1), h0_std=st.sampled_from([0.0, 0.7]),
       input_scale=st.sampled_from([0.1, 1.0, 10.0]), data=st.data())
def test_float64_outputs_and_gradients_match(shape, seed, h0_std, input_scale, data):
    _, num_obs, seq, batch = shape
    spec = data.draw(reset_masks(seq, batch))
    rng = np.random.default_rng(seed)
    policy = random_policy(num_obs, torch.float64, seed=seed % 1000, h0_std=h0_std)
    x = torch.from_numpy(rng.standard_normal((seq, batch, num_obs)) * input_scale)
    y = torch.from_numpy(rng.standard_normal((seq, batch, 4)))
    reset = build_mask(spec, seq, batch, rng)
    out_t, loss_t, dx_t, g_t = torch_loss_and_grads(policy, x, y, reset)
    out_b, loss_b, dx_b, g_b = bridge_loss_and_grads(chain_for(policy, seq, batch), x, y, reset)
    assert np.abs(out_t.numpy() - out_b).max() <= 1e-10
    assert abs(loss_t.item() - loss_b) <= 1e-10 * max(1.0, abs(loss_b))
    assert np.abs(dx_t.numpy() - dx_b).max() <= 1e-9 * max(np.abs(dx_b).max(), 1e-12)
    for k, g in g_b.items():
        assert np.abs(g_t[k].numpy().reshape(g.shape) - g).max() <= 1e-9 * max(np.abs(g).max(), 1e-12), k


@settings(max_examples=25, deadline=None)
@given(shape=st.sampled_from([s for s in SHAPES if s[0] == "float32"]), seed=st.integers(0, 2**31 - 1))
def test_float32_outputs_match(shape, seed):
    _, num_obs, seq, batch = shape
    rng = np.random.default_rng(seed)
    policy = random_policy(num_obs, torch.float32, seed=seed % 1000)
    x = torch.from_numpy(rng.standard_normal((seq, batch, num_obs)).astype(np.float32))
    reset = torch.from_numpy(rng.random((seq, batch)) < 0.05)
    with torch.no_grad():
        policy.reset()
        got = policy(x, reset).numpy()
    expected = chain_for(policy, seq, batch).forward(x.numpy(), reset.numpy())
    assert np.abs(got - expected).max() <= 1e-5


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), num_obs=st.sampled_from([22, 26]))
def test_three_implementations_agree(tmp_path_factory, seed, num_obs):
    """PyTorch, rl-tools C++ and foundation_policy's numpy reader on an exported random policy."""
    import foundation_policy as fp
    path = tmp_path_factory.mktemp("fp") / "p.h5"
    policy = eyas.StudentPolicy(num_obs, 4, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        policy.initial_hidden_state.normal_(generator=torch.Generator().manual_seed(seed + 1))
    eyas.save_rltools_h5(policy, path)
    numpy_model = fp.load(str(path))
    x = np.random.default_rng(seed).standard_normal((500, 2, num_obs)).astype(np.float32)
    with torch.no_grad():
        policy.reset()
        ours = policy(torch.from_numpy(x)).numpy()
    ref = numpy_model.evaluate(x)
    assert np.abs(ours - ref).max() <= 1e-5
    if num_obs == 22:
        cpp = chain_for(policy, 500, 2).forward(x)
        assert np.abs(cpp - ref).max() <= 1e-5
