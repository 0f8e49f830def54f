"""Event shifts: deterministic under a seed, monotone in severity, on simulated N-MNIST events;
the benchmark's clean path bins recordings exactly as the dataset's frames."""

from __future__ import annotations

import numpy as np
import pytest

from direct2event.data.event_shifts import (
    EVENT_SEVERITIES,
    EVENT_SHIFTS,
    EventRecordings,
    shift_recordings,
)
from direct2event.data.events import events_to_frames
from direct2event.data.nmnist_sim import SENSOR_SIZE, simulate_frames, simulate_recordings
from direct2event.data.static import load_digits


@pytest.fixture(scope="module")
def recordings() -> EventRecordings:
    """Four digits (scikit-learn's, scaled up to 28 x 28) as simulated saccade recordings."""
    digits = load_digits().train.x[:4, 0]
    images = np.kron(digits, np.ones((3, 3), dtype=np.float32))[:, :24, :24]
    images = np.pad(images, ((0, 0), (2, 2), (2, 2)))
    return EventRecordings(simulate_recordings(images, saccade_ms=30), np.arange(4), SENSOR_SIZE)


@pytest.mark.parametrize("name", sorted(EVENT_SHIFTS))
def test_each_event_shift_repeats_under_its_seed(name, recordings):
    severity = EVENT_SEVERITIES[name][1]
    a = shift_recordings(recordings, EVENT_SHIFTS[name], severity, seed=7)
    b = shift_recordings(recordings, EVENT_SHIFTS[name], severity, seed=7)
    state = np.random.get_state()[1].copy()
    c = shift_recordings(recordings, EVENT_SHIFTS[name], severity, seed=8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert any(not np.array_equal(x, y) for x, y in zip(a, c)) or name == "motion_speed"
    assert np.array_equal(np.random.get_state()[1], state)  # NumPy's global state left alone
    for i, ev in enumerate(recordings.events):  # as one recording at a time, the state kept once
        one = EVENT_SHIFTS[name](ev, severity, np.random.default_rng([7, i]), SENSOR_SIZE)
        assert np.array_equal(one, a[i])
    for ev in a:  # still on the sensor, with tonic's fields
        assert ev.dtype.names == ("x", "y", "t", "p")
        assert ev["x"].min() >= 0 and ev["x"].max() < SENSOR_SIZE[0]
        assert ev["y"].min() >= 0 and ev["y"].max() < SENSOR_SIZE[1]


def _count(events: list[np.ndarray]) -> float:
    return float(np.mean([len(e) for e in events]))


def _moved(before: list[np.ndarray], after: list[np.ndarray], field: str) -> float:
    return float(
        np.mean([np.abs(a[field].astype(float) - b[field]).mean() for a, b in zip(after, before)])
    )


# Per shift: a measured property that must grow with severity.
PROPERTIES = {
    "background_noise": lambda r, s: _count(s),
    "hot_pixels": lambda r, s: _count(s),
    "event_dropout": lambda r, s: -_count(s),
    "occluded_area": lambda r, s: -_count(s),
    "motion_speed": lambda r, s: float(np.mean([e["t"].max() for e in s])),
    "temporal_jitter": lambda r, s: float(
        np.mean([np.abs(np.sort(e["t"]) - np.sort(o["t"])[: len(e)]).mean() for e, o in zip(s, r)])
    ),
    "spatial_jitter": lambda r, s: float(
        np.mean([np.abs(np.diff(np.sort(e["x"]))).sum() + e["x"].std() for e in s])
    ),
}


@pytest.mark.parametrize("name", sorted(EVENT_SHIFTS))
def test_each_event_shift_is_monotone_in_severity(name, recordings):
    clean = recordings.events
    values = [
        PROPERTIES[name](clean, shift_recordings(recordings, EVENT_SHIFTS[name], s, seed=3))
        for s in EVENT_SEVERITIES[name]
    ]
    assert values[0] < values[1] < values[2], values


def test_background_noise_adds_the_asked_rate(recordings):
    ev = recordings.events[0]
    noisy = shift_recordings(
        EventRecordings([ev], np.zeros(1), SENSOR_SIZE), EVENT_SHIFTS["background_noise"], 10.0, 0
    )[0]
    span_s = (ev["t"].max() - ev["t"].min()) * 1e-6
    assert len(noisy) - len(ev) == round(10.0 * span_s * 34 * 34)


def test_clean_recordings_bin_to_the_dataset_frames(recordings):
    """The benchmark's clean frames (tonic ToFrame of the recordings) are the cached frames."""
    digits = load_digits().train.x[:4, 0]
    images = np.kron(digits, np.ones((3, 3), dtype=np.float32))[:, :24, :24]
    images = np.pad(images, ((0, 0), (2, 2), (2, 2)))
    frames, _ = simulate_frames(images, 8, saccade_ms=30, progress=False)
    binned = np.stack([events_to_frames(e, SENSOR_SIZE, 8) for e in recordings.events])
    assert np.array_equal(binned, frames)
