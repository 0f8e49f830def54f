"""The shift benchmark's test samples, clean and shifted on demand: image shifts act on test
images, event shifts on raw recordings before they are binned into the dataset's frames."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from direct2event.data.event_shifts import EventRecordings, shift_recordings
from direct2event.data.events import events_to_frames
from direct2event.snn.training import Split

# shift name -> (function, severities by level); the functions of snn.shifts or
# data.event_shifts, or a user's
ShiftTable = dict[str, tuple[Callable[..., Any], list[Any]]]


@dataclass(frozen=True)
class EventBinning:
    """How event recordings become the stage's frames: at most ``max_events_per_bin`` events
    per cell, as the dataset's frames; ``front``, a filter of each recording before binning
    (the clean front), used for the samples asked ``filtered``; ``timesteps``, the frames each
    recording is binned into."""

    max_events_per_bin: int | None = None
    front: Callable[[np.ndarray], np.ndarray] | None = None
    timesteps: int = 1


class ShiftedSamples:
    """An evaluation sample (``eval``) and an extra sample (``extra``: unlabelled uses such as
    recalibration, warm-up and held-out curves), disjoint, each shifted on demand and cached.
    Static data: ``images`` (the test split, shuffled with ``seed``); event data: ``recordings``
    (raw test recordings), binned into ``binning.timesteps`` frames after shifting, with at most
    ``max_events_per_bin`` events per cell as the dataset's frames."""

    def __init__(
        self,
        table: ShiftTable,
        seed: int,
        max_samples: int,
        n_extra: int,
        images: Split | None = None,
        recordings: EventRecordings | None = None,
        binning: EventBinning = EventBinning(),
        n_stream: int = 0,
    ) -> None:
        if (images is None) == (recordings is None):
            raise ValueError("ShiftedSamples needs test images or event recordings (one of them).")
        self.table, self.seed, self.timesteps = table, seed, binning.timesteps
        self.recordings = recordings
        self.max_events_per_bin = binning.max_events_per_bin  # as the dataset's frames
        self.front = binning.front  # event data: a filter of each recording before binning
        self.front_counts: dict[tuple[str, int, str], tuple[int, int]] = {}  # events in, out
        if images is not None:
            order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
            self.images: Split | None = Split(images.x[order], images.y[order])
            total = len(images)
        else:
            self.images = None
            total = len(recordings)  # type: ignore[arg-type]
        n_eval = min(max_samples, max(total - n_extra, total // 2))
        self.parts = {
            "eval": slice(0, n_eval),
            "extra": slice(n_eval, min(total, n_eval + n_extra)),
            # the stream test's own samples, after the others (as many as are left)
            "stream": slice(min(total, n_eval + n_extra), min(total, n_eval + n_extra + n_stream)),
        }
        self._cache: dict[tuple[str, int, str], Split] = {}
        # shifted recordings kept for the filtered samples of the same part (see ``keep``)
        self._kept: dict[tuple[str, int, str], list[np.ndarray]] = {}

    def __call__(
        self, shift: str, level: int, part: str, filtered: bool = False, keep: bool = False
    ) -> Split:
        """Level 0 is clean; levels 1..n the shift's severities; ``filtered``: event
        recordings through ``front`` before binning (its events in and out kept in
        ``front_counts``). ``keep``: event data keep the shifted recordings they make, for the
        filtered samples of the same part to take instead of shifting them again, until
        :meth:`drop_kept` (one part's recordings: a row's, not the whole table's)."""
        key = (shift if level else "clean", level, part + ("+front" if filtered else ""))
        if key not in self._cache:
            if filtered and (self.front is None or self.recordings is None):
                raise ValueError("filtered samples need event recordings and a front")
            self._cache[key] = self._make(
                shift, level, part, key if filtered else None, keep and not filtered
            )
        return self._cache[key]

    def drop_kept(self) -> None:
        """Forget the shifted recordings kept for filtering."""
        self._kept.clear()

    def _seed(self, shift: str, level: int, part: slice) -> int:
        """One seed per shift, severity and sample part (independent of the order of calls)."""
        names = list(self.table)
        entropy = [self.seed, names.index(shift) if level else 0, level, part.start]
        return int(np.random.SeedSequence(entropy).generate_state(1)[0])

    def _make(
        self,
        shift: str,
        level: int,
        name: str,
        front_key: tuple[str, int, str] | None = None,
        keep: bool = False,
    ) -> Split:
        part = self.parts[name]
        if self.images is not None:
            x, y = self.images.x[part], self.images.y[part]
            if level:
                fn, severities = self.table[shift]
                gen = torch.Generator().manual_seed(self._seed(shift, level, part))
                x = fn(x.float(), severities[level - 1], gen).to(x.dtype)
            return Split(x, y)
        rec = self.recordings
        assert rec is not None
        sub = type(rec)(rec.events[part], rec.labels[part], rec.sensor_size, rec.target_size)
        events = sub.events
        kept = self._kept.pop((shift, level, name), None) if front_key is not None else None
        if kept is not None:
            events = kept
        elif level:
            fn, severities = self.table[shift]
            events = shift_recordings(
                sub, fn, severities[level - 1], self._seed(shift, level, part)
            )
        if keep:
            self._kept[(shift, level, name)] = events
        if front_key is not None:
            assert self.front is not None
            before = sum(len(e) for e in events)
            events = [self.front(e) for e in events]
            self.front_counts[front_key] = (before, sum(len(e) for e in events))
        frames = np.stack(
            [
                events_to_frames(
                    e, sub.sensor_size, self.timesteps, sub.target_size, self.max_events_per_bin
                )
                for e in events
            ]
        )
        return Split(torch.from_numpy(frames), torch.from_numpy(np.asarray(sub.labels)))
