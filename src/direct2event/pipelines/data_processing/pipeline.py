"""Wiring of the dataset-preparation stage."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from direct2event.pipelines.data_processing.nodes import prepare_data


def create_pipeline(**kwargs: object) -> Pipeline:
    """raw_data -> splits."""
    return Pipeline(
        [Node(prepare_data, inputs=["raw_data", "settings"], outputs="splits", name="prepare_data")]
    )
