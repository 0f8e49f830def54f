"""Wiring of the lambda sweep and the final fine-tuning."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from direct2event.pipelines.finetuning.nodes import (
    finetune_event_model,
    finetune_lambda0,
    predict_direct_logits,
    tune_rate_lambda,
)


def create_pipeline(**kwargs: object) -> Pipeline:
    """D's logits (once) -> E at lambda = 0 (once) -> the sweep over lambda -> event_model at the
    chosen lambda."""
    return Pipeline(
        [
            Node(
                predict_direct_logits,
                inputs=["direct_model", "splits", "settings"],
                outputs="direct_logits",
                name="predict_direct_logits",
            ),
            Node(
                finetune_lambda0,
                inputs=["scaled_model", "direct_model", "splits", "settings", "direct_logits"],
                outputs="lambda0_event_model",
                name="finetune_lambda0",
            ),
            Node(
                tune_rate_lambda,
                inputs=[
                    "scaled_model",
                    "direct_model",
                    "splits",
                    "settings",
                    "direct_logits",
                    "lambda0_event_model",
                ],
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
                    "direct_logits",
                    "lambda0_event_model",
                ],
                outputs=["event_model", "finetune_log"],
                name="finetune_event_model",
            ),
        ]
    )
