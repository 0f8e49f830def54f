"""A clean front for event sensors: hot pixels and background activity removed before E sees the
events, as the field does before a network (tonic's ``DropPixel`` and ``Denoise``; NeuroBench's
DVS Gesture example).

- Hot pixels: a pixel whose event rate over the recording exceeds ``hot_pixel_hz`` is dropped,
  found from the recording's own rates (no labels, no clean reference), recording by recording
  as they arrive: tonic's ``DropPixel(hot_pixel_frequency=...)`` rule, counted with one
  ``bincount`` (:func:`drop_hot_pixels`).
- Background activity: an event is kept when one of its 4 neighbours fired within
  ``filter_time_us`` before it (tonic's ``Denoise``). tonic's version loops over the events in
  Python (a few µs per event, the stage's slowest part on noisy recordings); :func:`denoise` is
  the same rule vectorised with NumPy, to the event (``tests/data/test_event_filters.py``
  compares both on shifted recordings), many times faster.
- The event budget: where the front knows what a clean recording passes (``calibrate``), it
  holds the events it lets through to that budget. Added background activity raises the count
  a recording passes; the front then narrows its window, recording by recording, until the
  count is back within ``budget_tolerance`` of the budget, and widens it again (never past
  ``filter_time_us``) when the count falls below. A fixed window cannot do both: wide, it lets a
  noisy sensor double E's input events; narrow, it strips a clean digit's edges. Shifts that move
  events rather than add them (jitter) or remove them (dropout, occlusion) keep the count, and
  the window stays wide. This is the input's part of ``budgeted`` adaptation (which holds each
  layer's rates) for event sensors, whose input E cannot rescale.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
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
    # events grouped by pixel, in stream order within each (a stable sort): the last earlier
    # event of a pixel is one binary search away
    order = np.argsort(x * height + y, kind="stable")
    x, y, t = x[order], y[order], t[order]
    key = (x * height + y) * n + order
    keep = np.zeros(n, dtype=bool)
    for dx, dy in NEIGHBOURS:
        inside = (x + dx >= 0) & (x + dx < width) & (y + dy >= 0) & (y + dy < height)
        # each event's neighbour pixel and own place in the stream; a neighbour is the pixel
        # moved by one constant, so these are sorted as the keys are, and the search runs as
        # a merge (several times faster than searching them in stream order)
        target = key + (dx * height + dy) * n
        pos = np.searchsorted(key, target) - 1  # last key below: an earlier event there?
        found = inside & (pos >= 0)
        found[found] &= key[pos[found]] // n == target[found] // n
        last = np.zeros(n, dtype=np.int64)
        last[found] = t[pos[found]]
        keep[order[inside & (last + filter_time_us > t)]] = True
    return events[keep]


def drop_hot_pixels(events: np.ndarray, hot_pixel_hz: float) -> np.ndarray:
    """Events of pixels firing above ``hot_pixel_hz`` over the recording removed: tonic's
    ``DropPixel(hot_pixel_frequency=...)`` (its ``identify_hot_pixel`` rule: a pixel's count
    over ``(t_last - t_first)`` seconds), counted with one ``bincount`` and dropped with one
    mask instead of its 2-D histogram and a mask per hot pixel (a third of the front's time);
    equal to tonic's event for event (``tests/data/test_event_filters.py``)."""
    if len(events) < 2:
        return events
    x, y = events["x"].astype(np.int64), events["y"].astype(np.int64)
    pixel = x * (int(y.max()) + 1) + y
    limit = hot_pixel_hz * (events["t"][-1] - events["t"][0]) * 1e-6
    hot = np.bincount(pixel) > limit
    return events[~hot[pixel]]


@dataclass
class EventFront:
    """The front as one step: hot pixels dropped, then background activity; counts what it
    removes and what it costs. With a budget (:meth:`calibrate`) and ``budget_tolerance``, the
    background-activity window follows the events it passes (see the module's docstring):
    ``window_us`` is the window now, between ``min_filter_time_us`` and ``filter_time_us``.

    The controller reads a running count (``budget_momentum`` per recording: about ten
    recordings, so one large digit does not move it, and faster than the controller itself,
    which would swing on older news) and moves the log window by ``budget_step``
    of the relative excess over ``budget * (1 + budget_tolerance)``, or of the relative shortfall
    below the budget; in between it holds (a clean stream's count wanders inside the band)."""

    hot_pixel_hz: float = 300.0
    filter_time_us: float = 10_000.0
    budget_tolerance: float | None = 0.15
    min_filter_time_us: float = 1_000.0
    budget_step: float = 0.3
    budget_momentum: float = 0.9
    budget: float | None = field(default=None, init=False)  # events per clean recording
    window_us: float = field(default=0.0, init=False)
    events_in: int = field(default=0, init=False)
    events_out: int = field(default=0, init=False)
    seconds: float = field(default=0.0, init=False)
    _running: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.min_filter_time_us <= self.filter_time_us:
            raise ValueError(
                f"min_filter_time_us ({self.min_filter_time_us}) must be in (0, filter_time_us "
                f"= {self.filter_time_us}]"
            )
        self.window_us = self.filter_time_us

    def calibrate(self, clean: Iterable[np.ndarray]) -> float:
        """The budget: the mean events a clean recording passes at the full window (the
        calibration recordings; nothing is counted in ``events_in``/``events_out``)."""
        counts = [len(self._filter(e, self.filter_time_us)) for e in clean]
        if not counts:
            raise ValueError("calibrate the front on at least one clean recording")
        self.budget = float(np.mean(counts))
        self.reset()
        return self.budget

    def reset(self) -> None:
        """Back to the full window, the running count at the budget (a new deployment)."""
        self.window_us = self.filter_time_us
        self._running = self.budget or 0.0

    @property
    def budgeted(self) -> bool:
        return self.budget is not None and self.budget > 0 and self.budget_tolerance is not None

    def __call__(self, events: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        out = self._filter(events, self.window_us)
        if self.budgeted:
            self._steer(len(out))
        self.seconds += time.perf_counter() - start
        self.events_in += len(events)
        self.events_out += len(out)
        return out

    def _filter(self, events: np.ndarray, window_us: float) -> np.ndarray:
        return denoise(drop_hot_pixels(events, self.hot_pixel_hz), window_us)

    def _steer(self, passed: int) -> None:
        """One controller step after a recording that passed ``passed`` events."""
        assert self.budget is not None and self.budget_tolerance is not None
        m = self.budget_momentum
        self._running = m * self._running + (1.0 - m) * passed
        ratio = self._running / self.budget
        if ratio > 1.0 + self.budget_tolerance:
            move = -min(ratio - 1.0 - self.budget_tolerance, 1.0)
        elif ratio < 1.0:
            move = 1.0 - ratio
        else:
            return
        window = self.window_us * math.exp(self.budget_step * move)
        self.window_us = min(max(window, self.min_filter_time_us), self.filter_time_us)

    def removed_fraction(self) -> float:
        return 1.0 - self.events_out / self.events_in if self.events_in else 0.0

    def seconds_per_event(self) -> float:
        return self.seconds / self.events_in if self.events_in else 0.0
