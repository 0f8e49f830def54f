"""One pipeline per dataset key, all made from the same template with a namespace."""

from __future__ import annotations

from kedro.pipeline import Pipeline

from direct2event.params import DATASET_KEYS
from direct2event.pipelines.transfer.pipeline import create_pipeline


def register_pipelines() -> dict[str, Pipeline]:
    """``kedro run --pipelines <key>`` runs one dataset; ``kedro run`` alone runs ``mnist``."""
    template = create_pipeline()
    pipelines = {
        key: Pipeline(template, namespace=key, parameters={"params:energy_profiles"})
        for key in DATASET_KEYS
    }
    pipelines["__default__"] = pipelines["mnist"]
    return pipelines
