"""eyas.InferencePolicy (rl-tools' compiled evaluate_step, any batch) against StudentPolicy stepped the same way."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import eyas
from eyas import InferencePolicy, StudentPolicy
from eyas.bridge import chain_for

TOLERANCE = {torch.float32: 1e-6, torch.float64: 1e-12}


def random_student(dtype, seed=3) -> StudentPolicy:
    """rl-tools-initialised student with a non-zero initial state (so every reset changes the outputs)."""
    g = torch.Generator().manual_seed(seed)
    policy = StudentPolicy(22, 4, dtype=dtype, generator=g)
    with torch.no_grad():
        policy.initial_hidden_state.copy_(0.5 * torch.randn(16, generator=g, dtype=dtype))
    return policy


def make_policy(source: str, dtype) -> StudentPolicy:
    if source == "raptor":
        return eyas.load_rltools_h5(eyas.raptor_checkpoint_path(), dtype=dtype)
    return random_student(dtype)


def fly_both(policy: StudentPolicy, fast: InferencePolicy, steps: int, batch: int, seed: int = 0):
    """Step both through the same observations, full resets and per-row resets; returns both action sequences."""
    rng = np.random.default_rng(seed)
    np_dtype = policy.initial_hidden_state.detach().numpy().dtype
    policy.reset(batch_size=batch)
    fast.reset()
    ours, theirs = [], []
    for t in range(steps):
        if t == steps // 2:
            policy.reset(batch_size=batch)
            fast.reset()
        elif t % 23 == 11:
            done = rng.random(batch) < 0.5
            done[t % batch] = True
            policy.reset(dones=torch.from_numpy(done))
            fast.reset(done)
        obs = (0.5 * rng.standard_normal((batch, 22))).astype(np_dtype)
        with torch.no_grad():
            theirs.append(policy(torch.from_numpy(obs)).numpy())
        ours.append(fast.step(obs))
    return np.stack(ours), np.stack(theirs)


@pytest.mark.parametrize("source", ["raptor", "random"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [1, 5])
def test_same_actions_as_student_policy_with_resets(source, dtype, batch, single_thread):
    policy = make_policy(source, dtype)
    fast = InferencePolicy(policy, batch)
    ours, theirs = fly_both(policy, fast, 300, batch)
    assert ours.shape == (300, batch, 4) and ours.dtype == theirs.dtype
    assert np.abs(ours - theirs).max() <= TOLERANCE[dtype]
    np.testing.assert_allclose(fast.hidden_state, policy.hidden_states[0].numpy(), rtol=0, atol=TOLERANCE[dtype])


def test_the_comparison_catches_a_small_difference(single_thread):
    """The tolerance is far below what a wrong reset or a slightly different weight produces."""
    policy = random_student(torch.float32)
    other = random_student(torch.float32)
    with torch.no_grad():
        other.output_layer.bias[0] += 1e-4
    ours, theirs = fly_both(policy, InferencePolicy(other, 2), 50, 2)
    assert np.abs(ours - theirs).max() > 10 * TOLERANCE[torch.float32]
    # and without the resets the student's actions differ (the resets in fly_both are exercised)
    fast = InferencePolicy(policy, 2)
    ours, theirs = fly_both(policy, fast, 50, 2)
    fast.reset()
    rng = np.random.default_rng(0)
    no_reset = np.stack([fast.step((0.5 * rng.standard_normal((2, 22))).astype(np.float32)) for _ in range(50)])
    assert np.abs(no_reset - theirs).max() > 1e-3 and np.abs(ours - theirs).max() <= TOLERANCE[torch.float32]


def test_auto_reset_matches_student_policy_and_rltools_evaluate_step(single_thread):
    policy = random_student(torch.float64)
    x = np.random.default_rng(1).standard_normal((23, 3, 22))
    chain = chain_for(policy, 7, 3)  # rl-tools' evaluate_step resets every SEQUENCE_LENGTH = 7 steps
    chain.reset()
    rltools = np.stack([chain.evaluate_step(x[t]) for t in range(23)])
    fast = InferencePolicy(policy, 3, auto_reset_steps=7)
    ours = np.stack([fast.step(x[t]) for t in range(23)])
    assert np.abs(ours - rltools).max() <= 1e-12
    stepped = StudentPolicy(22, 4, dtype=torch.float64, auto_reset_steps=7)
    stepped.load_state_dict(policy.state_dict())
    stepped.reset(batch_size=3)
    fast.reset()
    done = np.array([False, True, False])
    ours, theirs = [], []
    for t in range(23):
        if t == 10:  # an explicit reset restarts that row's count
            fast.reset(done)
            stepped.reset(dones=torch.from_numpy(done))
        ours.append(fast.step(x[t]))
        with torch.no_grad():
            theirs.append(stepped(torch.from_numpy(x[t])).numpy())
    assert np.abs(np.stack(ours) - np.stack(theirs)).max() <= 1e-12


def test_checkpoint_path_and_policy_give_the_same_actions(single_thread):
    path = eyas.raptor_checkpoint_path()
    obs = np.random.default_rng(2).standard_normal((4, 22)).astype(np.float32)
    a = InferencePolicy(path, 4)
    b = InferencePolicy(eyas.load_rltools_h5(path), 4)
    assert a.dtype == np.float32 and InferencePolicy(path, dtype="float64").dtype == np.float64
    for _ in range(5):
        assert np.array_equal(a.step(obs), b.step(obs))


def test_out_buffer_batch_change_and_input_conversion(single_thread):
    policy = random_student(torch.float32)
    fast = InferencePolicy(policy)
    obs = np.random.default_rng(3).standard_normal((1, 22))
    out = np.full((1, 4), np.nan, np.float32)
    assert fast.step(obs, out=out) is out and np.isfinite(out).all()  # float64 obs converted to float32
    fast.reset()
    assert np.array_equal(fast.step(obs.astype(np.float32)), out)
    fast.reset(batch_size=3)
    assert fast.batch_size == 3 and fast.step(np.repeat(obs, 3, 0)).shape == (3, 4)
    state = fast.hidden_state
    state[:] = 7.0  # a copy: the policy's own state is untouched
    assert fast.hidden_state.shape == (3, 16) and not (fast.hidden_state == 7.0).any()


def test_clear_errors(single_thread):
    fast = InferencePolicy(random_student(torch.float32), 2)
    with pytest.raises(ValueError, match=r"expected shape \(2, 22\).*got \(3, 22\)"):
        fast.step(np.zeros((3, 22), np.float32))
    with pytest.raises(ValueError, match=r"got \(2, 21\)"):
        fast.step(np.zeros((2, 21), np.float32))
    with pytest.raises(ValueError, match=r"got \(22,\)"):
        fast.step(np.zeros(22, np.float32))
    with pytest.raises(ValueError, match="out"):
        fast.step(np.zeros((2, 22), np.float32), out=np.zeros((2, 4), np.float64))
    with pytest.raises(ValueError, match="reset mask"):
        fast.reset(np.array([1, 0]))
    with pytest.raises(ValueError, match="NaN"):
        InferencePolicy(random_student(torch.float32), validate_inputs=True).step(np.full((1, 22), np.nan))
    with pytest.raises(TypeError, match="StudentPolicy"):
        InferencePolicy(torch.nn.Linear(22, 4))
    with pytest.raises(ValueError, match="hidden_dim 16"):
        InferencePolicy(StudentPolicy(22, 4, hidden_dim=8))
    with pytest.raises(FileNotFoundError):
        InferencePolicy("no/such/checkpoint.h5")
    with pytest.raises(ValueError) as error:
        fast.step(np.zeros((3, 22), np.float32))
    assert "\n" not in str(error.value) and "reset(batch_size=" in str(error.value)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_large_batches_step_the_torch_copy_and_agree_with_the_chain(dtype, single_thread):
    """backend="auto" switches to PyTorch from TORCH_FROM_BATCH rows; both backends give StudentPolicy's actions."""
    from eyas.inference import TORCH_FROM_BATCH

    policy = make_policy("random", dtype)
    batch = TORCH_FROM_BATCH + 3
    auto, chain = InferencePolicy(policy, batch), InferencePolicy(policy, batch, backend="rltools")
    assert (auto.backend, chain.backend) == ("torch", "rltools")
    assert InferencePolicy(policy, TORCH_FROM_BATCH - 1).backend == "rltools"
    ours, theirs = fly_both(policy, auto, 60, batch)
    assert np.abs(ours - theirs).max() <= TOLERANCE[dtype]
    ours, _ = fly_both(policy, chain, 60, batch)
    assert np.abs(ours - theirs).max() <= TOLERANCE[dtype]
    with pytest.raises(ValueError, match=r"InferencePolicy.step: observations: expected shape"):
        auto.step(np.zeros((batch, 21)))
    small = InferencePolicy(policy, 2, backend="torch")
    assert small.backend == "torch"
    ours, theirs = fly_both(policy, small, 30, 2)
    assert np.abs(ours - theirs).max() <= TOLERANCE[dtype]
