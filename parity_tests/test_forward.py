"""PyTorch StudentPolicy vs rl-tools' own chain (eyas._rltools): forward on identical 500 x 64 sequences."""
import numpy as np
import pytest
import torch

from parity_helpers import DTYPES, chain_for, random_policy, random_sequences

# float64: both sides evaluate the same formula with different summation orders; a 500-step GRU is
# contractive, so errors stay at a few hundred ulps of O(1) values (~1e-13); 1e-10 leaves margin but
# would catch any missing term (those show up at >= 1e-4).
# float32: same argument with u = 6e-8: ~1e-6 observed; the acceptance bound is 1e-5.
TOL = {"float64": 1e-10, "float32": 1e-5}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("num_obs", [22, 26])
@pytest.mark.parametrize("reset_prob", [0.0, 0.01])
def test_forward_500x64(dtype, num_obs, reset_prob):
    policy = random_policy(num_obs, DTYPES[dtype], seed=num_obs)
    x, _, reset = random_sequences(500, 64, num_obs, DTYPES[dtype], seed=1, reset_prob=reset_prob)
    chain = chain_for(policy, 500, 64)
    expected = chain.forward(x.numpy(), None if reset is None else reset.numpy())
    with torch.no_grad():
        policy.reset()
        got = policy(x, reset).numpy()
    assert got.dtype == expected.dtype == np.dtype(dtype)
    err = np.abs(got - expected).max()
    assert err <= TOL[dtype], f"max abs error {err:.3e} > {TOL[dtype]}"
    if reset is not None:
        assert reset[1:].any(), "the mask must contain in-sequence resets"


def test_reset_mask_changes_output():
    """Guards the test above: resets must matter, or a policy ignoring the mask would pass."""
    policy = random_policy(22, torch.float64)
    x, _, reset = random_sequences(500, 64, 22, torch.float64, seed=2, reset_prob=0.01)
    with torch.no_grad():
        policy.reset()
        a = policy(x, reset)
        policy.reset()
        b = policy(x)
    assert (a - b).abs().max() > 1e-3
