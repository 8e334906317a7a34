"""The distillation trainer's step equals rl-tools' post-training step (forward with the reset mask, MSE,
backward, Adam) computed by the compiled rl-tools chain, on batches built by `EpisodeDataset.get_batches`."""
import numpy as np
import pytest
import torch

from eyas.distill.dataset import EpisodeDataset
from eyas.distill.trainer import Distillation
from eyas.parity import TOLERANCE
from parity_helpers import chain_for, random_policy


def _dataset(num_obs: int, dtype, seed: int, num_episodes: int, max_len: int = 500) -> EpisodeDataset:
    """Episodes of random lengths (many short ones, so batches hold resets mid-row) with smooth observations."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(20, max_len + 1, (num_episodes,), generator=g)
    lengths[::3] = torch.randint(2, 40, (len(lengths[::3]),), generator=g)
    seq = int(lengths.max())
    obs = torch.cumsum(0.1 * torch.randn(seq, num_episodes, num_obs, generator=g, dtype=torch.float64), 0)
    tgt = torch.tanh(obs[..., :4] + 0.3 * torch.randn(seq, num_episodes, 4, generator=g, dtype=torch.float64))
    ds = EpisodeDataset(int(lengths.sum()), num_obs, 4, dtype=dtype)
    ds.add_episodes(obs, tgt, lengths)
    return ds


def _rel(ours: torch.Tensor, theirs: np.ndarray) -> float:
    a = ours.detach().cpu().double().numpy().reshape(theirs.shape)
    scale = max(float(np.abs(theirs).max()), 1e-300)
    return float(np.abs(a - theirs).max()) / scale


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", [(500, 64), (32, 8)])
def test_trainer_steps_match_rltools(dtype, shape):
    """Three consecutive trainer steps on get_batches' batches vs rl-tools' train_step on the same arrays.
    Loss, every parameter and both Adam moments are compared after each step. Tolerances are the parity
    suite's (eyas.parity.TOLERANCE): loss as an output, parameters as the Adam trajectory."""
    seq, batch = shape
    name = "float64" if dtype == torch.float64 else "float32"
    tol = TOLERANCE[name]
    num_obs = 22
    policy = random_policy(num_obs, dtype, seed=11, h0_std=0.5)
    chain = chain_for(policy, seq, batch, dtype=dtype)
    trainer = Distillation(policy, batch_size=batch, sequence_length=seq, learning_rate=1e-4)
    max_len = min(500, 4 * seq)
    ds = _dataset(num_obs, dtype, seed=12, num_episodes=12 * batch * seq // max_len + 8, max_len=max_len)
    batches = list(ds.get_batches(batch, seq, shuffle=True, generator=torch.Generator().manual_seed(13)))
    assert len(batches) >= 3
    assert any(bool(b.reset.any()) for b in batches[:3]), "the test batches must contain resets"
    for step, b in enumerate(batches[:3]):
        cpp_loss = chain.train_step(b.observations.numpy(), b.targets.numpy(), b.reset.numpy(), 1e-4)
        loss = trainer.train_step(b)
        assert abs(float(loss) - float(cpp_loss)) <= tol["output"] * max(1.0, abs(float(cpp_loss))), \
            f"step {step}: loss {float(loss)!r} vs rl-tools {float(cpp_loss)!r}"
        cpp_params = chain.get_parameters()
        m1, m2 = chain.get_optimizer_moments(False), chain.get_optimizer_moments(True)
        for key, p in policy.rltools_parameters().items():
            assert _rel(p, cpp_params[key]) <= tol["adam"], f"step {step}: parameter {key} differs"
            state = trainer.optimizer.state[p]
            assert _rel(state["exp_avg"], m1[key]) <= tol["relative"], f"step {step}: first moment {key}"
            assert _rel(state["exp_avg_sq"], m2[key]) <= tol["relative"], f"step {step}: second moment {key}"
    assert trainer.num_updates == 3 and chain.optimizer_age == 1 + 3  # rl-tools' age starts at 1


def test_sequence_length_one_matches_rltools():
    """MLP mode (sequence_length 1: batches (B, obs), no reset mask) vs rl-tools' chain compiled for sequence
    length 1 and batch 4096: two consecutive steps, float32 tolerances."""
    dtype = torch.float32
    tol = TOLERANCE["float32"]
    policy = random_policy(22, dtype, seed=21)
    chain = chain_for(policy, 1, 4096, dtype=dtype)
    ds = _dataset(22, dtype, seed=22, num_episodes=150, max_len=300)
    trainer = Distillation(policy, batch_size=4096, sequence_length=1)
    batches = ds.get_batches(4096, 1, shuffle=True, generator=torch.Generator().manual_seed(1))
    for step in range(2):
        b = next(batches)
        assert b.observations.shape == (4096, 22) and b.targets.shape == (4096, 4) and b.reset is None
        cpp_loss = chain.train_step(b.observations[None].numpy(), b.targets[None].numpy(), None, 1e-4)
        loss = trainer.train_step(b)
        assert abs(float(loss) - float(cpp_loss)) <= tol["output"] * max(1.0, abs(float(cpp_loss)))
        cpp_params = chain.get_parameters()
        for key, p in policy.rltools_parameters().items():
            assert _rel(p, cpp_params[key]) <= tol["adam"], f"step {step}: parameter {key} differs"
