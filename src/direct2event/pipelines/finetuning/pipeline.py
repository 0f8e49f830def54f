"""Wiring of the lambda sweep and the final fine-tuning."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from direct2event.pipelines.finetuning.nodes import finetune_event_model, tune_rate_lambda


def create_pipeline(**kwargs: object) -> Pipeline:
    """scaled_model (+ D as teacher and reference) -> tuning_report -> event_model."""
    return Pipeline(
        [
            Node(
                tune_rate_lambda,
                inputs=["scaled_model", "direct_model", "splits", "settings"],
                outputs=["tuning_report", "tuning_metrics", "tuned_event_model"],
                name="tune_rate_lambda",
            ),
            Node(
                finetune_event_model,
                inputs=[
                    "scaled_model",
                    "direct_model",
                    "splits",
                    "settings",
                    "tuning_report",
                    "tuned_event_model",
                ],
                outputs=["event_model", "finetune_log"],
                name="finetune_event_model",
            ),
        ]
    )
