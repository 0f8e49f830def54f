"""Dataset preparation: bin events to frames when needed, then split with the run's seed."""

from __future__ import annotations

import logging

from direct2event.data.containers import RawData
from direct2event.data.splits import DataSplits, make_splits
from direct2event.glue.datasets import EventSource
from direct2event.glue.params import PipelineParams

logger = logging.getLogger(__name__)


def prepare_data(raw_data: RawData | EventSource, settings: PipelineParams) -> DataSplits:
    """Train / calibration / validation / test splits (calibration out of train, test untouched);
    event recordings are binned to ``model.timesteps`` frames first."""
    data = settings.data
    raw = (
        raw_data.frames(settings.model.timesteps) if isinstance(raw_data, EventSource) else raw_data
    )
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
