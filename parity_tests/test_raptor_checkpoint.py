"""The released RAPTOR checkpoint (foundation-policy on PyPI) through eyas, the bridge and back."""
import numpy as np
import pytest
import torch

import eyas
from eyas.bridge import chain_class, chain_for
from eyas.rltools_h5 import read_example


def test_raptor_example_output_pytorch(raptor_checkpoint):
    policy = eyas.load_rltools_h5(raptor_checkpoint)
    assert sum(p.numel() for p in policy.parameters()) == 2084
    x, y = read_example(raptor_checkpoint)
    assert x.shape == (500, 2, 22) and y.shape == (500, 2, 4)
    with torch.no_grad():
        out = policy(torch.from_numpy(x)).numpy()
    assert np.abs(out - y).max() <= 1e-5


def test_raptor_example_output_bridge(raptor_checkpoint):
    policy = eyas.load_rltools_h5(raptor_checkpoint)
    x, y = read_example(raptor_checkpoint)
    chain = chain_for(policy, 500, 2)
    out = chain.forward(x)
    assert np.abs(out - y).max() <= 1e-5


def test_raptor_stepwise_matches_example(raptor_checkpoint):
    """evaluate_step in a loop (bridge) and 2-D steps (PyTorch) reproduce the example too."""
    policy = eyas.load_rltools_h5(raptor_checkpoint)
    x, y = read_example(raptor_checkpoint)
    chain = chain_for(policy, 500, 2)
    chain.reset()
    policy.reset(batch_size=2)
    with torch.no_grad():
        for t in range(500):
            a = chain.evaluate_step(x[t])
            b = policy(torch.from_numpy(x[t])).numpy()
            assert np.abs(a - y[t]).max() <= 1e-5 and np.abs(b - y[t]).max() <= 1e-5


def test_exported_policy_loads_in_foundation_policy(tmp_path):
    import foundation_policy as fp
    policy = eyas.StudentPolicy(22, 4, generator=torch.Generator().manual_seed(3))
    path = tmp_path / "student.h5"
    eyas.save_rltools_h5(policy, path, meta={"note": "test"})
    model = fp.load(str(path))  # asserts the stored example is reproduced (mean |diff| < 1e-6)
    x = np.random.default_rng(0).standard_normal((500, 2, 22)).astype(np.float32)
    expected = model.evaluate(x)
    with torch.no_grad():
        policy.reset()
        got = policy(torch.from_numpy(x)).numpy()
    assert np.abs(got - expected).max() <= 1e-6
    back = eyas.load_rltools_h5(path)
    for k, v in policy.rltools_parameters().items():
        assert torch.equal(v, back.rltools_parameters()[k])
    assert back.meta == {"note": "test"}


def test_roundtrip_of_released_checkpoint(tmp_path, raptor_checkpoint):
    """Loading RAPTOR and saving it again writes the same datasets and attributes."""
    import h5py

    policy = eyas.load_rltools_h5(raptor_checkpoint)
    x, _ = read_example(raptor_checkpoint)
    out = tmp_path / "again.h5"
    eyas.save_rltools_h5(policy, out, meta=policy.meta_text, checkpoint_name=policy.checkpoint_name, example_input=x)
    with h5py.File(raptor_checkpoint) as a, h5py.File(out) as b:
        names_a, names_b = [], []
        a.visit(names_a.append)
        b.visit(names_b.append)
        assert sorted(names_a) == sorted(names_b)
        for n in names_a:
            assert dict(a[n].attrs) == dict(b[n].attrs), n
            if isinstance(a[n], h5py.Dataset) and not n.startswith("example/output"):
                assert a[n].shape == b[n].shape and a[n].dtype == b[n].dtype
                np.testing.assert_array_equal(a[n][()], b[n][()])
        assert dict(a["actor"].attrs) == dict(b["actor"].attrs)
        assert np.abs(a["example/output"][()] - b["example/output"][()]).max() <= 1e-5


def test_bridge_rejects_bad_shapes_and_dtypes():
    chain = chain_class(22, "float32", 32, 8)()
    with pytest.raises(ValueError, match=r"expected shape \(32, 8, 22\), got \(32, 8, 26\)"):
        chain.forward(np.zeros((32, 8, 26), np.float32))
    with pytest.raises(TypeError, match="expected dtype float32"):
        chain.forward(np.zeros((32, 8, 22), np.float64))
    with pytest.raises(ValueError, match=r"reset: expected shape \(32, 8\)"):
        chain.forward(np.zeros((32, 8, 22), np.float32), np.zeros((32, 7), bool))
    with pytest.raises(ValueError, match=r"1.weights_hidden: expected shape \(48, 16\)"):
        params = chain.get_parameters()
        params["1.weights_hidden"] = np.zeros((16, 48), np.float32)
        chain.set_parameters(params)
    with pytest.raises(KeyError, match="missing parameter '0.weights'"):
        chain.set_parameters({})
    with pytest.raises(RuntimeError, match="call forward first"):
        chain.backward(np.zeros((32, 8, 4), np.float32))
    with pytest.raises(ValueError, match="no rl-tools chain compiled"):
        chain_class(22, "float32", 33, 8)
