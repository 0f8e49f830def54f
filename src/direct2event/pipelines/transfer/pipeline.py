"""The per-dataset template pipeline; wiring only. Namespaced once per dataset key."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from direct2event.pipelines.transfer.nodes import (
    build_summary,
    evaluate_direct_model,
    prepare_data,
    train_direct_model,
)


def create_pipeline(**kwargs: object) -> Pipeline:
    """prep -> direct-coded training -> evaluation -> summary."""
    return Pipeline(
        [
            Node(
                prepare_data,
                inputs=["raw_data", "params:data", "params:model"],
                outputs="splits",
                name="prepare_data",
            ),
            Node(
                train_direct_model,
                inputs=["splits", "params:model", "params:training"],
                outputs=["direct_model", "direct_training_history", "direct_training_curve"],
                name="train_direct_model",
            ),
            Node(
                evaluate_direct_model,
                inputs=["direct_model", "splits", "params:model", "params:training"],
                outputs="direct_evaluation",
                name="evaluate_direct_model",
            ),
            Node(
                build_summary,
                inputs=["params:dataset", "splits", "params:model", "direct_evaluation"],
                outputs=["summary", "summary_metrics"],
                name="build_summary",
            ),
        ]
    )
