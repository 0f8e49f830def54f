"""The per-dataset template pipeline; wiring only. Namespaced once per dataset key."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from direct2event.pipelines.transfer.nodes import (
    build_summary,
    calibrate_surrogate,
    evaluate_transfer,
    finetune_event_model,
    prepare_data,
    register_networks,
    run_ablation,
    scale_event_thresholds,
    train_direct_model,
    tune_rate_lambda,
)

SETTINGS = ["params:model", "params:transfer", "params:training"]


def create_pipeline(**kwargs: object) -> Pipeline:
    """prep -> D training -> calibration -> thresholds -> lambda sweep -> fine-tuning ->
    evaluation -> ablation -> summary -> model registry."""
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
                inputs=[
                    "splits",
                    "params:model",
                    "params:training",
                    "params:dataset",
                    "params:source_model",
                ],
                outputs=["direct_model", "direct_training_history", "direct_training_curve"],
                name="train_direct_model",
            ),
            Node(
                calibrate_surrogate,
                inputs=["direct_model", "splits", *SETTINGS],
                outputs=["calibration", "calibration_curves", "calibration_metrics"],
                name="calibrate_surrogate",
            ),
            Node(
                scale_event_thresholds,
                inputs=["direct_model", "calibration", "splits", *SETTINGS],
                outputs=["scaled_model", "threshold_report", "threshold_plot", "threshold_metrics"],
                name="scale_event_thresholds",
            ),
            Node(
                tune_rate_lambda,
                inputs=[
                    "scaled_model",
                    "direct_model",
                    "splits",
                    "params:dataset",
                    "params:data",
                    *SETTINGS,
                    "params:tuning",
                    "params:source_model",
                    "params:energy_profiles",
                ],
                outputs=["tuning_report", "tuning_plot", "tuning_metrics", "tuned_event_model"],
                name="tune_rate_lambda",
            ),
            Node(
                finetune_event_model,
                inputs=[
                    "scaled_model",
                    "direct_model",
                    "splits",
                    *SETTINGS,
                    "tuning_report",
                    "tuned_event_model",
                ],
                outputs=["event_model", "finetune_history", "finetune_curve"],
                name="finetune_event_model",
            ),
            Node(
                evaluate_transfer,
                inputs=[
                    "direct_model",
                    "event_model",
                    "splits",
                    *SETTINGS,
                    "params:energy_profiles",
                ],
                outputs=["evaluation", "energy_plot"],
                name="evaluate_transfer",
            ),
            Node(
                run_ablation,
                inputs=[
                    "direct_model",
                    "scaled_model",
                    "evaluation",
                    "splits",
                    *SETTINGS,
                    "params:energy_profiles",
                ],
                outputs=["ablation", "ablation_plot"],
                name="run_ablation",
            ),
            Node(
                build_summary,
                inputs=[
                    "params:dataset",
                    "splits",
                    "params:model",
                    "params:transfer",
                    "evaluation",
                    "ablation",
                    "tuning_report",
                ],
                outputs=["summary", "summary_metrics"],
                name="build_summary",
            ),
            Node(
                register_networks,
                inputs=[
                    "direct_model",
                    "event_model",
                    "summary",
                    "params:dataset",
                    "params:model",
                    "params:source_model",
                    "params:register_models",
                ],
                outputs="registry_report",
                name="register_networks",
            ),
        ]
    )
