"""Wiring of evaluation, energy estimation and the ablation."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from direct2event.pipelines.evaluation.nodes import evaluate_transfer, run_ablation


def create_pipeline(**kwargs: object) -> Pipeline:
    """D and E on the test split -> evaluation; each transfer step in turn -> ablation."""
    return Pipeline(
        [
            Node(
                evaluate_transfer,
                inputs=["direct_model", "event_model", "splits", "settings"],
                outputs="evaluation",
                name="evaluate_transfer",
            ),
            Node(
                run_ablation,
                inputs=[
                    "direct_model",
                    "scaled_model",
                    "evaluation",
                    "splits",
                    "settings",
                    "tuning_report",
                    "direct_logits",
                    "lambda0_event_model",
                ],
                outputs="ablation",
                name="run_ablation",
            ),
        ]
    )
