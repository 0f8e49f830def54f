"""A clean front for event sensors: hot pixels and background activity removed before E sees the
events, as the field does before a network (tonic's ``DropPixel`` and ``Denoise``; NeuroBench's
DVS Gesture example).

- Hot pixels: a pixel whose event rate over the recording exceeds ``hot_pixel_hz`` is dropped,
  found from the recording's own rates (no labels, no clean reference), recording by recording
  as they arrive. tonic's ``DropPixel(hot_pixel_frequency=...)`` does it with a histogram, fast
  enough, so it is used as is.
- Background activity: an event is kept when one of its 4 neighbours fired within
  ``filter_time_us`` before it (tonic's ``Denoise``). tonic's version loops over the events in
  Python (a few µs per event, the stage's slowest part on noisy recordings); :func:`denoise` is
  the same rule vectorised with NumPy, to the event (``tests/data/test_event_filters.py``
  compares both on shifted recordings), many times faster.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

SensorSize = tuple[int, int, int]
NEIGHBOURS = ((-1, 0), (1, 0), (0, -1), (0, 1))


def denoise(events: np.ndarray, filter_time_us: float) -> np.ndarray:
    """tonic's ``Denoise(filter_time)``, vectorised: keep event ``i`` when a 4-neighbour pixel
    (on the sensor the recording spans: ``x`` up to its largest ``x``) had an event earlier in
    the stream whose time plus ``filter_time_us`` is after ``t_i``; a neighbour with no event
    yet counts as firing at time 0, as tonic's memory starts at ``filter_time``."""
    n = len(events)
    if n == 0:
        return events
    x, y, t = (events[k].astype(np.int64) for k in ("x", "y", "t"))
    width, height = int(x.max()) + 1, int(y.max()) + 1
    pixel = x * height + y
    # events grouped by pixel, in stream order within each: the last earlier event of a pixel
    # is one binary search away
    order = np.lexsort((np.arange(n), pixel))
    key = pixel[order] * n + order
    keep = np.zeros(n, dtype=bool)
    for dx, dy in NEIGHBOURS:
        nx, ny = x + dx, y + dy
        inside = (nx >= 0) & (nx < width) & (ny >= 0) & (ny < height)
        target = (nx * height + ny) * n + np.arange(n)
        pos = np.searchsorted(key, target) - 1  # last key below: an earlier event there?
        found = inside & (pos >= 0)
        found[found] &= key[pos[found]] // n == (nx * height + ny)[found]
        last = np.zeros(n, dtype=np.int64)
        last[found] = t[order[pos[found]]]
        keep |= inside & (last + filter_time_us > t)
    return events[keep]


def drop_hot_pixels(events: np.ndarray, hot_pixel_hz: float) -> np.ndarray:
    """Events of pixels firing above ``hot_pixel_hz`` over the recording removed (tonic's
    ``DropPixel``, which finds them with a histogram of the recording)."""
    if len(events) < 2:
        return events
    from tonic.transforms import DropPixel

    return DropPixel(hot_pixel_frequency=hot_pixel_hz)(events)


@dataclass
class EventFront:
    """The front as one step: hot pixels dropped, then background activity; counts what it
    removes and what it costs."""

    hot_pixel_hz: float = 300.0
    filter_time_us: float = 10_000.0
    events_in: int = field(default=0, init=False)
    events_out: int = field(default=0, init=False)
    seconds: float = field(default=0.0, init=False)

    def __call__(self, events: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        out = denoise(drop_hot_pixels(events, self.hot_pixel_hz), self.filter_time_us)
        self.seconds += time.perf_counter() - start
        self.events_in += len(events)
        self.events_out += len(out)
        return out

    def removed_fraction(self) -> float:
        return 1.0 - self.events_out / self.events_in if self.events_in else 0.0

    def seconds_per_event(self) -> float:
        return self.seconds / self.events_in if self.events_in else 0.0
