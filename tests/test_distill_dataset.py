"""EpisodeDataset: storage layout and rl-tools' batch construction, checked against a line-by-line transcription
of the batching loop in rl-tools' src/foundation_policy/post_training/main.cpp."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from eyas.distill.dataset import DatasetError, EpisodeDataset


def _episodes(lengths, num_obs=3, num_actions=2, seed=0):
    """Padded time-major episodes whose observation column 0 encodes (episode, step) to make every sample unique."""
    g = torch.Generator().manual_seed(seed)
    seq, n = max(lengths), len(lengths)
    obs = torch.randn(seq, n, num_obs, generator=g)
    obs[..., 0] = torch.arange(n)[None, :] * 1000 + torch.arange(seq)[:, None]
    tgt = torch.randn(seq, n, num_actions, generator=g)
    return obs, tgt, torch.tensor(lengths)


def _rltools_batches(ds: EpisodeDataset, order: list[int], batch_size: int, seq: int):
    """rl-tools' loop, transcribed: returns [(index[S][B], reset[S][B])] of the batches it trains on."""
    n_total, n_episode = ds.num_steps, ds.num_episodes
    starts, truncated = ds.episode_start.tolist(), ds.truncated.tolist()
    out = []
    epoch_episode_index = 0
    current_sample = starts[order[epoch_episode_index]]
    while True:
        index = [[0] * batch_size for _ in range(seq)]
        reset_mask = [[False] * batch_size for _ in range(seq)]
        for sample_i in range(batch_size):
            reset = False
            for step_i in range(seq):
                index[step_i][sample_i] = current_sample
                reset_mask[step_i][sample_i] = reset
                next_sample = (current_sample + 1) % n_total
                reset = next_sample == 0 or truncated[current_sample]
                if not reset:
                    current_sample = next_sample
                else:
                    epoch_episode_index += 1
                    if epoch_episode_index >= n_episode:
                        return out  # "goto end_of_epoch": the batch being filled is dropped
                    current_sample = starts[order[epoch_episode_index]]
        out.append((index, reset_mask))


def test_layout_and_truncation_flags():
    obs, tgt, lengths = _episodes([3, 5, 1])
    ds = EpisodeDataset(20, 3, 2)
    ds.add_episodes(obs, tgt, lengths, teacher_ids=torch.tensor([7, 7, 8]))
    assert ds.num_steps == 9 and ds.num_episodes == 3
    assert ds.episode_start[:3].tolist() == [0, 3, 8]
    assert ds.truncated[:9].tolist() == [False, False, True, False, False, False, False, True, True]
    assert ds.episode_teacher[:3].tolist() == [7, 7, 8]
    # episode 1, step 4 is stored at 3 + 4
    assert ds.observations[7, 0] == 1004 and torch.equal(ds.targets[7], tgt[4, 1])
    assert ds.nbytes == EpisodeDataset.nbytes_for(20, 3, 2, 20)


def test_raptor_epoch_memory_is_documented():
    """1000 teachers x 10 episodes x 500 steps, 22 obs, 4 actions, float32: 525 MB (module docstring)."""
    steps = 1000 * 10 * 500
    assert EpisodeDataset.nbytes_for(steps, 22, 4, max_episodes=10_000) == steps * 105 + 10_000 * 24


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("batch_size,seq", [(4, 7), (3, 1), (2, 25), (5, 3)])
def test_batches_equal_rltools_loop(shuffle, batch_size, seq):
    lengths = [5, 12, 1, 9, 30, 2, 7, 7, 3, 18, 11, 4]
    obs, tgt, lens = _episodes(lengths)
    ds = EpisodeDataset(200, 3, 2)
    ds.add_episodes(obs, tgt, lens)
    g = torch.Generator().manual_seed(5)
    batches = list(ds.get_batches(batch_size, seq, shuffle=shuffle, generator=g))
    g = torch.Generator().manual_seed(5)
    order = torch.randperm(len(lengths), generator=g).tolist() if shuffle else list(range(len(lengths)))
    expected = _rltools_batches(ds, order, batch_size, seq)
    assert len(batches) == len(expected) == ds.num_batches(batch_size, seq) > 0
    for b, (index, reset) in zip(batches, expected):
        idx = torch.tensor(index)  # (S, B)
        if seq == 1:
            assert b.reset is None and b.observations.shape == (batch_size, 3)
            assert torch.equal(b.observations, ds.observations[idx[0]])
            assert torch.equal(b.targets, ds.targets[idx[0]])
            assert torch.equal(b.index, idx[0])
            assert not any(reset[0])
        else:
            assert b.observations.shape == (seq, batch_size, 3) and b.reset.shape == (seq, batch_size)
            assert torch.equal(b.observations, ds.observations[idx])
            assert torch.equal(b.targets, ds.targets[idx])
            assert torch.equal(b.index, idx)
            assert b.reset.tolist() == reset


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(1, 40), min_size=1, max_size=25), batch_size=st.integers(1, 6),
       seq=st.integers(1, 30), seed=st.integers(0, 2**16))
def test_batches_equal_rltools_loop_property(lengths, batch_size, seq, seed):
    obs, tgt, lens = _episodes(lengths, seed=seed)
    ds = EpisodeDataset(sum(lengths), 3, 2)
    ds.add_episodes(obs, tgt, lens)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(lengths), generator=g).tolist()
    expected = _rltools_batches(ds, order, batch_size, seq)
    assert ds.num_batches(batch_size, seq) == len(expected)
    if not expected:
        with pytest.raises(DatasetError, match="one batch needs more than"):
            next(ds.get_batches(batch_size, seq, generator=torch.Generator().manual_seed(seed)))
        return
    got = list(ds.get_batches(batch_size, seq, generator=torch.Generator().manual_seed(seed)))
    for b, (index, reset) in zip(got, expected):
        idx = torch.tensor(index)
        if seq == 1:
            assert torch.equal(b.observations, ds.observations[idx[0]])
        else:
            assert torch.equal(b.observations, ds.observations[idx]) and b.reset.tolist() == reset


def test_every_reset_marks_an_episode_start_and_rows_start_unflagged():
    obs, tgt, lens = _episodes([50, 3, 40, 8, 60, 2, 33])
    ds = EpisodeDataset(500, 3, 2)
    ds.add_episodes(obs, tgt, lens)
    for b in ds.get_batches(3, 20, generator=torch.Generator().manual_seed(0)):
        assert not b.reset[0].any()
        step = b.observations[..., 0] % 1000  # step index inside its episode
        assert torch.equal(b.reset[1:], (step[1:] == 0))


def test_capacity_and_validation_errors_write_nothing():
    obs, tgt, lens = _episodes([4, 4])
    ds = EpisodeDataset(6, 3, 2)
    with pytest.raises(DatasetError, match="dataset full"):
        ds.add_episodes(obs, tgt, lens)
    assert ds.num_steps == 0 and ds.num_episodes == 0
    bad = tgt.clone()
    bad[1, 0, 0] = float("nan")
    ds = EpisodeDataset(20, 3, 2)
    with pytest.raises(DatasetError, match="NaN"):
        ds.add_episodes(obs, bad, lens)
    assert ds.num_steps == 0
    bad[1, 0, 0] = 0.0
    bad[3, 1, 1] = float("nan")  # padding beyond an episode's length is ignored ... but step 3 < 4 is inside
    with pytest.raises(DatasetError):
        ds.add_episodes(obs, bad, lens)
    bad[3, 1, 1] = 0.0
    ds.add_episodes(obs, bad, torch.tensor([4, 3]))
    with pytest.raises(DatasetError, match="lengths"):
        ds.add_episodes(obs, tgt, torch.tensor([0, 4]))
    with pytest.raises(DatasetError, match="sequence_length"):
        ds.num_batches(4, 0)


def test_clear_and_drop_oldest():
    obs, tgt, lens = _episodes([3, 4, 5])
    ds = EpisodeDataset(12, 3, 2)
    ds.add_episodes(obs, tgt, lens)
    assert ds.drop_oldest(4) == 7  # whole episodes: 3 + 4 steps
    assert ds.num_steps == 5 and ds.num_episodes == 1
    assert ds.episode_start[0] == 0 and ds.observations[0, 0] == 2000 and ds.truncated[4]
    ds.clear()
    assert ds.num_steps == 0 and ds.num_episodes == 0


def test_state_dict_round_trip():
    obs, tgt, lens = _episodes([3, 9])
    ds = EpisodeDataset(20, 3, 2)
    ds.add_episodes(obs, tgt, lens)
    other = EpisodeDataset(20, 3, 2)
    other.load_state_dict(ds.state_dict())
    assert other.num_steps == 12 and torch.equal(other.observations[:12], ds.observations[:12])
    assert torch.equal(other.truncated[:12], ds.truncated[:12])
