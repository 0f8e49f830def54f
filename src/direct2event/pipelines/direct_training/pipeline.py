"""Wiring of the network-D stage."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from direct2event.pipelines.direct_training.nodes import train_direct_model


def create_pipeline(**kwargs: object) -> Pipeline:
    """splits -> direct_model (trained, or from the registry) and its epoch log."""
    return Pipeline(
        [
            Node(
                train_direct_model,
                inputs=["splits", "settings"],
                outputs=["direct_model", "direct_training_log"],
                name="train_direct_model",
            )
        ]
    )
