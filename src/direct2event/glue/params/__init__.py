"""The parameters of every dataset pipeline: validated once, before any node, into typed objects.

The defaults here are the one source of defaults; they are MNIST's settings. Each
``conf/base/parameters_<key>.yml`` holds only what differs for that dataset, and
:class:`direct2event.glue.hooks.ProjectHooks` validates it (plus ``energy_profiles``) with
:func:`load_settings` and hands the result to every node as the dataset ``<key>.settings``.
``python -m direct2event params <key>`` prints a dataset's effective parameters.
"""

from direct2event.glue.params.network import (
    AblationParams,
    CalibrationParams,
    DataParams,
    FinetuneParams,
    ModelParams,
    ThresholdParams,
    TrainingParams,
    TransferParams,
)
from direct2event.glue.params.pipeline import (
    DATASET_KEYS,
    EVENT_DATASETS,
    SWEEP_SUFFIX,
    TOP_LEVEL_PARAMS,
    ParameterError,
    PipelineParams,
    check_runtime_params,
    load_settings,
)
from direct2event.glue.params.shift import AdaptationParams, CustomShift, ShiftParams, StreamParams
from direct2event.glue.params.sweep import EarlyStopParams, TuningParams

__all__ = [
    "DATASET_KEYS",
    "EVENT_DATASETS",
    "SWEEP_SUFFIX",
    "TOP_LEVEL_PARAMS",
    "AblationParams",
    "AdaptationParams",
    "CalibrationParams",
    "CustomShift",
    "DataParams",
    "EarlyStopParams",
    "FinetuneParams",
    "ModelParams",
    "ParameterError",
    "PipelineParams",
    "ShiftParams",
    "StreamParams",
    "ThresholdParams",
    "TrainingParams",
    "TransferParams",
    "TuningParams",
    "check_runtime_params",
    "load_settings",
]
