"""The clean front for event sensors: the vectorised background-activity and hot-pixel filters
equal tonic's ``Denoise`` and ``DropPixel`` event for event, and the hot-pixel filter finds
planted hot pixels and leaves a clean recording's pixels alone."""

from __future__ import annotations

import numpy as np
import pytest
from tonic.transforms import Denoise, DropPixel

from direct2event.data.event_filters import EventFront, denoise, drop_hot_pixels
from direct2event.data.event_shifts import EVENT_SHIFTS
from direct2event.data.nmnist_sim import SENSOR_SIZE, simulate_recordings
from direct2event.data.static import load_digits


@pytest.fixture(scope="module")
def recordings() -> list[np.ndarray]:
    """Six digits (scikit-learn's, scaled to 28 x 28) as simulated saccade recordings."""
    digits = load_digits().train.x[:6, 0]
    images = np.kron(digits, np.ones((3, 3), dtype=np.float32))[:, :24, :24]
    return simulate_recordings(np.pad(images, ((0, 0), (2, 2), (2, 2))))


@pytest.mark.parametrize(
    ("shift", "severity"), [(None, 0), ("background_noise", 20.0), ("hot_pixels", 10.0)]
)
@pytest.mark.parametrize("filter_time_us", [1_000, 10_000])
def test_denoise_equals_tonic_event_for_event(recordings, shift, severity, filter_time_us):
    for i, clean in enumerate(recordings):
        events = clean
        if shift:
            events = EVENT_SHIFTS[shift](clean, severity, np.random.default_rng(i), SENSOR_SIZE)
        ours = denoise(events, filter_time_us)
        assert np.array_equal(ours, Denoise(filter_time=filter_time_us)(events))
        assert 0 < len(ours) <= len(events)


@pytest.mark.parametrize("hot_pixel_hz", [100.0, 300.0, 3_000.0])
def test_drop_hot_pixels_equals_tonic_event_for_event(recordings, hot_pixel_hz):
    """Clean, hot-pixel and noisy recordings through tonic's ``DropPixel`` and ours: the same
    events kept, in the same order (at 3 kHz none is hot, at 300 Hz the planted ones are)."""
    dropped = 0
    for i, clean in enumerate(recordings):
        for shift, severity in ((None, 0), ("hot_pixels", 10.0), ("background_noise", 20.0)):
            events = clean
            if shift:
                rng = np.random.default_rng(i)
                events = EVENT_SHIFTS[shift](clean, severity, rng, SENSOR_SIZE)
            ours = drop_hot_pixels(events, hot_pixel_hz)
            assert np.array_equal(ours, DropPixel(hot_pixel_frequency=hot_pixel_hz)(events))
            dropped += len(events) - len(ours)
    assert (dropped > 0) == (hot_pixel_hz <= 300.0)


def test_denoise_by_hand() -> None:
    """Three events at one pixel and its right neighbour: kept only when the neighbour fired
    within the window before (or the stream is younger than the window, as in tonic)."""
    ev = np.zeros(4, dtype=[("x", "<i8"), ("y", "<i8"), ("t", "<i8"), ("p", "<i8")])
    ev["x"], ev["y"], ev["t"] = [0, 1, 1, 0], [0, 0, 0, 0], [5_000, 20_000, 40_000, 41_000]
    # t=5000 < window: kept (tonic's memory starts at the window); t=20000: neighbour fired at
    # 5000, 15 ms before: dropped; t=40000: neighbour last at 5000: dropped; t=41000: neighbour
    # (1, 0) fired at 40000: kept
    assert denoise(ev, 10_000)["t"].tolist() == [5_000, 41_000]


def test_hot_pixels_are_found_from_rates_and_a_clean_recording_keeps_every_pixel(recordings):
    for i, clean in enumerate(recordings):
        kept = drop_hot_pixels(clean, 300.0)
        assert np.array_equal(kept, clean)  # no pixel of a digit fires at 300 Hz
        hot = EVENT_SHIFTS["hot_pixels"](clean, 5.0, np.random.default_rng(i), SENSOR_SIZE)
        planted = {(int(x), int(y)) for x, y in zip(hot["x"], hot["y"], strict=True)} - {
            (int(x), int(y)) for x, y in zip(clean["x"], clean["y"], strict=True)
        }
        out = drop_hot_pixels(hot, 300.0)
        left = {(int(x), int(y)) for x, y in zip(out["x"], out["y"], strict=True)}
        assert not planted & left  # every planted hot pixel is gone
        assert len(out) >= len(clean) - 5 * 60  # at most the hot pixels' own legit events


def test_the_front_counts_what_it_removes(recordings):
    front = EventFront(hot_pixel_hz=300.0, filter_time_us=10_000.0)
    noisy = EVENT_SHIFTS["background_noise"](recordings[0], 20.0, np.random.default_rng(0),
                                             SENSOR_SIZE)  # fmt: skip
    out = front(noisy)
    assert front.events_in == len(noisy) and front.events_out == len(out)
    assert front.removed_fraction() == pytest.approx(1 - len(out) / len(noisy))
    # a third of the 7k noise events go (the rest have a noisy neighbour within 10 ms)
    assert len(noisy) - len(out) > 0.3 * (len(noisy) - len(recordings[0]))
    assert front.seconds_per_event() > 0
    clean = EventFront(hot_pixel_hz=300.0, filter_time_us=10_000.0)
    assert len(clean(recordings[0])) > 0.9 * len(recordings[0])  # a clean digit keeps 90 %


def _noisy(recordings: list[np.ndarray], n: int, hz: float, seed: int) -> list[np.ndarray]:
    """``n`` recordings cycling over the digits, each with its own background activity."""
    rng = np.random.default_rng(seed)
    shift = EVENT_SHIFTS["background_noise"]
    return [shift(recordings[i % len(recordings)], hz, rng, SENSOR_SIZE) for i in range(n)]


def test_the_event_budget_holds_a_noisy_sensor_and_leaves_a_clean_one_alone(recordings):
    """Calibrated on clean digits, the front keeps its full window (and every event the fixed
    front keeps) on clean recordings; under background activity that doubles what the fixed
    front passes, it narrows its window until it passes about the budget; back on clean
    recordings it widens again, toward the full window."""
    front = EventFront(hot_pixel_hz=300.0, filter_time_us=10_000.0, budget_tolerance=0.15)
    budget = front.calibrate(recordings)
    fixed = EventFront(hot_pixel_hz=300.0, filter_time_us=10_000.0, budget_tolerance=None)
    assert budget == pytest.approx(np.mean([len(fixed(e)) for e in recordings]))
    assert fixed.window_us == 10_000.0 and not fixed.budgeted
    clean = [recordings[i % len(recordings)] for i in range(30)]
    for e in clean:
        assert np.array_equal(front(e), denoise(drop_hot_pixels(e, 300.0), 10_000.0))
    assert front.window_us == 10_000.0
    noisy = _noisy(recordings, 60, 10.0, 0)
    passed_fixed = np.mean([len(fixed(e)) for e in noisy[-20:]])
    assert passed_fixed > 1.3 * budget  # the fixed window lets the noise through
    passed = [len(front(e)) for e in noisy]
    narrowed = front.window_us
    assert front.min_filter_time_us <= narrowed < 5_000.0
    assert np.mean(passed[-20:]) < 1.3 * budget  # held near the budget (within the tolerance
    assert np.mean(passed[-20:]) > 0.8 * budget  # and the running count's noise), not starved
    for e in clean * 2:
        front(e)
    # released: widening slows as the count nears the budget (about 0.87 of the full window
    # after 60 clean recordings, from 0.45)
    assert front.window_us > max(8_000.0, 1.5 * narrowed)
    front.window_us = 2_000.0
    front.reset()
    assert front.window_us == 10_000.0


def test_a_front_without_budget_or_with_a_bad_window_is_refused_plainly(recordings):
    with pytest.raises(ValueError, match="min_filter_time_us"):
        EventFront(filter_time_us=1_000.0, min_filter_time_us=2_000.0)
    with pytest.raises(ValueError, match="at least one clean recording"):
        EventFront().calibrate([])
    front = EventFront()
    assert not front.budgeted  # no budget until calibrated: a fixed window
    out = front(recordings[0])
    assert front.window_us == 10_000.0 and len(out) > 0
