from __future__ import annotations

import pytest
import torch

from direct2event.snn.encoders import encode, encodes_events, rate, regular, ttfs


def test_rate_coded_mean_equals_intensity() -> None:
    x = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0])
    spikes = rate(x.expand(2000, 5), timesteps=50, generator=torch.Generator().manual_seed(0))
    mean = spikes.mean(dim=(0, 1))
    # 100k Bernoulli draws per value: standard error <= 0.0016
    assert torch.allclose(mean, x, atol=0.006)
    assert set(spikes.unique().tolist()) <= {0.0, 1.0}


def test_rate_rejects_values_outside_unit_interval() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        rate(torch.tensor([1.5]), 4)


def test_regular_rate_steps_are_hand_computed() -> None:
    # T = 4: step t spikes when floor(t x + 1/2) grows
    x = torch.tensor([0.0, 0.125, 0.25, 0.5, 0.75, 1.0])
    s = regular(x, 4)
    assert s.T.tolist() == [
        [0, 0, 0, 0],
        [0, 0, 0, 1],
        [0, 1, 0, 0],
        [1, 0, 1, 0],
        [1, 1, 0, 1],
        [1, 1, 1, 1],
    ]


def test_regular_rate_counts_round_and_spread_evenly_without_randomness() -> None:
    torch.manual_seed(0)
    x = torch.rand(500)
    for timesteps in (1, 3, 8, 50):
        s = encode(x, "regular", timesteps)
        assert set(s.unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(s.sum(0), torch.floor(timesteps * x + 0.5))
        assert (s.sum(0) / timesteps - x).abs().max() <= 0.5 / timesteps + 1e-6
        assert torch.equal(s, encode(x, "regular", timesteps))
    # evenly spaced: the gaps between one value's spikes differ by at most one step
    s = regular(x, 50)
    for column in s.T:
        gaps = torch.diff(column.nonzero().flatten())
        if len(gaps) > 1:
            assert int(gaps.max() - gaps.min()) <= 1
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        regular(torch.tensor([-0.2]), 4)


def test_ttfs_one_spike_at_the_right_step() -> None:
    # T = 4: thresholds 1, 0.75, 0.5, 0.25
    x = torch.tensor([1.0, 0.8, 0.75, 0.6, 0.3, 0.2, 0.0])
    s = ttfs(x, 4)
    assert s.sum(0).tolist() == [1, 1, 1, 1, 1, 0, 0]
    first = s.argmax(0)[:5].tolist()
    assert first == [0, 1, 1, 2, 3]


def test_frames_must_match_timesteps_and_are_time_first() -> None:
    x = torch.rand(3, 5, 2, 4, 4)
    out = encode(x, "frames", 5)
    assert out.shape == (5, 3, 2, 4, 4)
    assert torch.equal(out[2, 1], x[1, 2])
    with pytest.raises(ValueError, match="must divide the bins"):
        encode(x, "frames", 4)


def test_fewer_steps_sum_adjacent_bins_and_keep_every_event() -> None:
    counts = torch.randint(0, 4, (2, 8, 2, 3, 3)).float()
    coarse = encode(counts, "frames", 4)
    assert coarse.shape == (4, 2, 2, 3, 3)
    assert torch.equal(coarse[1, 0], counts[0, 2] + counts[0, 3])  # step 1 = bins 2 and 3
    assert torch.equal(coarse[3, 1], counts[1, 6] + counts[1, 7])
    assert torch.equal(encode(counts, "frames", 1)[0], counts.sum(1))
    assert float(coarse.sum()) == float(counts.sum())


def test_direct_repeats_and_event_flags() -> None:
    x = torch.rand(2, 3)
    out = encode(x, "analog", 3)
    assert out.shape == (3, 2, 3) and torch.equal(out[1], x)
    assert not encodes_events("analog")
    assert encodes_events("rate") and encodes_events("ttfs") and encodes_events("frames")
    assert encodes_events("regular")
    with pytest.raises(ValueError, match="Unknown input encoding"):
        encode(x, "phase", 3)  # type: ignore[arg-type]
