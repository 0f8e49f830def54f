"""Distribution shifts of event recordings, at graded severities, for the shift benchmark.

A shift is ``f(events, severity, rng, sensor_size) -> events`` on one recording (tonic's
structured ``(x, y, t, p)`` array, t in microseconds). Tonic's transforms are used where they
exist (``UniformNoise``, ``DropEvent``, ``TimeJitter``, ``SpatialJitter``, ``TimeSkew``,
``DropEventByArea``); hot pixels are written here (tonic only removes them). Tonic draws from
NumPy's global generator, so each call runs under a state seeded from ``rng``, and the global
state is restored afterwards (once per :func:`shift_recordings`): a shift repeats under its seed
and leaves other code's randomness alone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

SensorSize = tuple[int, int, int]
EventShift = Callable[[np.ndarray, float, np.random.Generator, SensorSize], np.ndarray]


@dataclass
class EventRecordings:
    """Raw test recordings of an event dataset: what the event shifts act on before binning."""

    events: list[np.ndarray]
    labels: np.ndarray
    sensor_size: SensorSize
    target_size: int | None = None  # tonic Downsample to this width before binning

    def __post_init__(self) -> None:
        if len(self.events) != len(self.labels):
            raise ValueError(f"{len(self.events)} recordings but {len(self.labels)} labels.")

    def __len__(self) -> int:
        return len(self.labels)


_kept = threading.local()  # inside :func:`_numpy_state_kept` on this thread


@contextmanager
def _numpy_state_kept() -> Iterator[None]:
    """NumPy's global state saved once and restored at the end, for many seeded calls: saving
    and restoring it per recording (a 624-word copy each way) cost more than most shifts."""
    if getattr(_kept, "on", False):
        yield
        return
    state, _kept.on = np.random.get_state(), True
    try:
        yield
    finally:
        _kept.on = False
        np.random.set_state(state)


@contextmanager
def _numpy_seeded(rng: np.random.Generator) -> Iterator[None]:
    with _numpy_state_kept():
        np.random.seed(int(rng.integers(2**32)))
        yield


def _span_us(events: np.ndarray) -> float:
    return float(events["t"].max() - events["t"].min()) if len(events) else 0.0


def background_noise(
    events: np.ndarray, severity: float, rng: np.random.Generator, sensor_size: SensorSize
) -> np.ndarray:
    """Uniform background activity of ``severity`` Hz per pixel (tonic ``UniformNoise``)."""
    from tonic.transforms import UniformNoise

    if len(events) == 0:
        return events
    n = round(severity * _span_us(events) * 1e-6 * sensor_size[0] * sensor_size[1])
    with _numpy_seeded(rng):
        out = UniformNoise(sensor_size=sensor_size, n=n)(events)
    return out.astype(events.dtype)


def hot_pixels(
    events: np.ndarray, severity: float, rng: np.random.Generator, sensor_size: SensorSize
) -> np.ndarray:
    """``severity`` pixels that fire at 1 kHz all through the recording, each with one polarity
    and a random phase (a defective sensor; tonic can only remove such pixels)."""
    count = round(severity)
    if len(events) == 0 or count == 0:
        return events
    t0, t1 = int(events["t"].min()), int(events["t"].max())
    period = 1000
    parts = [events]
    for _ in range(count):
        phase = int(rng.integers(period))
        times = np.arange(t0 + phase, t1 + 1, period)
        hot = np.zeros(len(times), dtype=events.dtype)
        hot["t"] = times
        hot["x"] = rng.integers(sensor_size[0])
        hot["y"] = rng.integers(sensor_size[1])
        hot["p"] = rng.integers(sensor_size[2])
        parts.append(hot)
    out = np.concatenate(parts)
    return out[np.argsort(out["t"], kind="stable")]


def event_dropout(
    events: np.ndarray, severity: float, rng: np.random.Generator, sensor_size: SensorSize
) -> np.ndarray:
    """Each event lost with probability ``severity`` (tonic ``DropEvent``)."""
    from tonic.transforms import DropEvent

    with _numpy_seeded(rng):
        return DropEvent(p=severity)(events)


def temporal_jitter(
    events: np.ndarray, severity: float, rng: np.random.Generator, sensor_size: SensorSize
) -> np.ndarray:
    """Gaussian time jitter of ``severity`` ms (tonic ``TimeJitter``, re-sorted)."""
    from tonic.transforms import TimeJitter

    with _numpy_seeded(rng):
        out = TimeJitter(std=severity * 1000.0, clip_negative=True, sort_timestamps=True)(events)
    return out.astype(events.dtype)


def spatial_jitter(
    events: np.ndarray, severity: float, rng: np.random.Generator, sensor_size: SensorSize
) -> np.ndarray:
    """Gaussian position jitter of variance ``severity`` px^2 per axis (tonic ``SpatialJitter``,
    events pushed off the sensor dropped)."""
    from tonic.transforms import SpatialJitter

    with _numpy_seeded(rng):
        out = SpatialJitter(
            sensor_size=sensor_size, var_x=severity, var_y=severity, clip_outliers=True
        )(
            events.astype(
                [("x", float), ("y", float), ("t", events.dtype["t"]), ("p", events.dtype["p"])]
            )
        )
    rounded = np.zeros(len(out), dtype=events.dtype)
    for name in ("t", "p"):
        rounded[name] = out[name]
    rounded["x"] = np.clip(np.round(out["x"]), 0, sensor_size[0] - 1)
    rounded["y"] = np.clip(np.round(out["y"]), 0, sensor_size[1] - 1)
    return rounded


def motion_speed(
    events: np.ndarray, severity: float, rng: np.random.Generator, sensor_size: SensorSize
) -> np.ndarray:
    """Motion ``severity`` times slower (time stamps stretched, tonic ``TimeSkew``)."""
    from tonic.transforms import TimeSkew

    out = TimeSkew(coefficient=severity, offset=0)(events.copy())
    return out.astype(events.dtype)


def occluded_area(
    events: np.ndarray, severity: float, rng: np.random.Generator, sensor_size: SensorSize
) -> np.ndarray:
    """Events in a random box of ``severity`` times the sensor's sides removed (tonic
    ``DropEventByArea``)."""
    from tonic.transforms import DropEventByArea

    with _numpy_seeded(rng):
        return DropEventByArea(sensor_size=sensor_size, area_ratio=severity)(events)


EVENT_SHIFTS: dict[str, EventShift] = {
    "background_noise": background_noise,
    "hot_pixels": hot_pixels,
    "event_dropout": event_dropout,
    "temporal_jitter": temporal_jitter,
    "spatial_jitter": spatial_jitter,
    "motion_speed": motion_speed,
    "occluded_area": occluded_area,
}

# Mild, middle and strong, in each function's unit (Hz per pixel, pixels, probability, ms,
# px^2, slow-down factor, side fraction).
EVENT_SEVERITIES: dict[str, tuple[float, float, float]] = {
    "background_noise": (5.0, 10.0, 20.0),
    "hot_pixels": (2.0, 5.0, 10.0),
    "event_dropout": (0.2, 0.4, 0.6),
    "temporal_jitter": (10.0, 30.0, 60.0),
    "spatial_jitter": (0.5, 1.0, 2.0),
    "motion_speed": (1.5, 2.0, 3.0),
    "occluded_area": (0.3, 0.4, 0.5),
}


def probe_event_shift(fn: EventShift, severities: list[float], name: str) -> None:
    """Run a user's event shift on two small recordings at each severity and refuse what the
    stage could not use, naming the shift and what was expected: a structured array with
    tonic's fields (x, y, t, p), on the sensor, sorted in time."""
    sensor: SensorSize = (8, 8, 2)
    rng = np.random.default_rng(0)
    probes = []
    for n in (20, 35):
        ev = np.zeros(n, dtype=[("x", "<i8"), ("y", "<i8"), ("t", "<i8"), ("p", "<i8")])
        ev["x"], ev["y"] = rng.integers(8, size=n), rng.integers(8, size=n)
        ev["t"], ev["p"] = np.sort(rng.integers(0, 100_000, size=n)), rng.integers(2, size=n)
        probes.append(ev)
    for severity in severities:
        for i, ev in enumerate(probes):
            where = f"shift '{name}' at severity {severity}"
            try:
                out = fn(ev.copy(), severity, np.random.default_rng([0, i]), sensor)
            except Exception as err:
                raise ValueError(f"{where} failed on a probe recording: {err!r}") from err
            if (
                not isinstance(out, np.ndarray)
                or out.dtype.names is None
                or not {"x", "y", "t", "p"} <= set(out.dtype.names)
            ):
                raise ValueError(
                    f"{where} returned {getattr(out, 'dtype', type(out).__name__)}; expected "
                    "tonic's structured events with fields x, y, t, p."
                )
            if len(out) and (
                out["x"].min() < 0 or out["x"].max() >= sensor[0]
                or out["y"].min() < 0 or out["y"].max() >= sensor[1]
            ):  # fmt: skip
                raise ValueError(f"{where} returned events off the {sensor[:2]} sensor.")
            if len(out) > 1 and bool(np.any(np.diff(out["t"]) < 0)):
                raise ValueError(f"{where} returned events out of time order: sort by t.")


def shift_recordings(
    recordings: EventRecordings, shift: EventShift, severity: float, seed: int
) -> list[np.ndarray]:
    """Every recording shifted, recording ``i`` with its own generator from ``(seed, i)``."""
    with _numpy_state_kept():
        return [
            shift(ev, severity, np.random.default_rng([seed, i]), recordings.sensor_size)
            for i, ev in enumerate(recordings.events)
        ]
