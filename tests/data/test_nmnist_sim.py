from __future__ import annotations

import numpy as np
import pytest
from tonic.datasets import NMNIST
from tonic.transforms import Denoise, ToFrame

from direct2event.data.nmnist_sim import (
    SENSOR_SIZE,
    bin_counts,
    counts_to_events,
    saccade_offsets,
    simulate_counts,
    simulate_frames,
)
from direct2event.data.static import load_mnist


@pytest.fixture(scope="module")
def digits_28() -> np.ndarray:
    return load_mnist(None).test.x[:16, 0]


@pytest.fixture(scope="module")
def counts(digits_28):
    return simulate_counts(digits_28)


def test_saccade_path_is_a_closed_centred_triangle() -> None:
    path = saccade_offsets(105)
    assert path.shape == (316, 2)
    assert np.allclose(path[0], path[-1])
    assert np.allclose(path.max(0) + path.min(0), 0)
    assert np.allclose(path[105] - path[0], [3.5, 7.0])


def test_event_count_polarity_and_tonic_format(counts) -> None:
    events = [counts_to_events(c) for c in counts]
    n = np.array([len(e) for e in events])
    assert 3000 < n.mean() < 7000  # a real N-MNIST digit has about 4.3k events
    on = np.mean([e["p"].mean() for e in events])
    assert 0.4 < on < 0.6  # a closed saccade path brightens as much as it darkens
    e = events[0]
    assert e.dtype == NMNIST.dtype
    assert e["x"].max() < 34 and e["y"].max() < 34 and e["x"].min() >= 0
    assert np.all(np.diff(e["t"]) >= 0)
    # tonic transforms apply unchanged
    assert 0 < len(Denoise(filter_time=10_000)(e)) <= len(e)


@pytest.mark.parametrize("timesteps", [4, 7, 8])
def test_vectorised_binning_equals_tonic_to_frame(counts, timesteps: int) -> None:
    ours = bin_counts(counts, timesteps).numpy()
    for i in range(len(counts)):
        ref = ToFrame(sensor_size=SENSOR_SIZE, n_time_bins=timesteps)(counts_to_events(counts[i]))
        assert np.array_equal(ours[i], ref)


def test_two_pass_simulation_equals_stored_counts(digits_28, counts) -> None:
    frames, n_events = simulate_frames(digits_28, 8, chunk=5, progress=False)
    assert frames.dtype == np.uint8 and frames.shape == (16, 8, 2, 34, 34)
    assert np.array_equal(frames, bin_counts(counts, 8).numpy())
    assert np.array_equal(n_events, counts.flatten(1).sum(1).numpy())
