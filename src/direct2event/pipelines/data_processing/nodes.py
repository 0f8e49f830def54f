"""Dataset preparation: bin events to frames when needed, then split with the run's seed."""

from __future__ import annotations

import dataclasses
import logging

from direct2event.data.containers import LabelledArrays, RawData
from direct2event.data.events import cap_events
from direct2event.data.splits import DataSplits, make_splits
from direct2event.glue.datasets import EventSource
from direct2event.glue.params import PipelineParams

logger = logging.getLogger(__name__)


def cap_frames(raw: RawData, max_per_bin: int) -> RawData:
    """``raw``'s event frames with at most ``max_per_bin`` events per cell, every part alike."""
    if raw.kind != "events":
        raise ValueError(
            f"data.max_events_per_bin caps event frames, but {raw.name} holds images: remove it."
        )

    def cap(part: LabelledArrays | None) -> LabelledArrays | None:
        return None if part is None else LabelledArrays(cap_events(part.x, max_per_bin), part.y)

    return dataclasses.replace(raw, train=cap(raw.train), test=cap(raw.test), val=cap(raw.val))


def prepare_data(raw_data: RawData | EventSource, settings: PipelineParams) -> DataSplits:
    """Train / calibration / validation / test splits (calibration out of train, test untouched);
    event recordings are binned to ``model.timesteps`` frames first (and capped at
    ``data.max_events_per_bin`` events per cell when set)."""
    data = settings.data
    raw = (
        raw_data.frames(settings.model.timesteps) if isinstance(raw_data, EventSource) else raw_data
    )
    if data.max_events_per_bin is not None:
        # after the frame cache, which keeps every event: changing the cap never re-bins
        raw = cap_frames(raw, data.max_events_per_bin)
    splits = make_splits(
        raw,
        data.calibration_fraction,
        data.validation_fraction,
        settings.seed,
        data.max_train,
        data.max_validation,
        data.max_test,
    )
    logger.info("%s splits: %s (input %s)", splits.name, splits.sizes(), splits.input_shape)
    return splits
