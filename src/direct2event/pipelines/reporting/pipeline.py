"""Wiring of the report: summary, one node per figure, the registry (per-epoch metrics are
logged live by the nodes that train)."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from direct2event.pipelines.reporting.figures import (
    plot_ablation,
    plot_calibration,
    plot_direct_training,
    plot_energy,
    plot_finetuning,
    plot_thresholds,
    plot_tuning,
)
from direct2event.pipelines.reporting.nodes import (
    build_summary,
    export_nir,
    register_networks,
    result_tables,
)
from direct2event.pipelines.reporting.shift_figures import (
    plot_shift_accuracy,
    plot_shift_energy,
    plot_stream,
)


def create_pipeline(**kwargs: object) -> Pipeline:
    """Every result of the run -> summary.json, metrics, plots and registered models."""
    return Pipeline(
        [
            Node(
                build_summary,
                inputs=["splits", "settings", "evaluation", "ablation", "tuning_report"],
                outputs=["summary", "summary_metrics"],
                name="build_summary",
            ),
            Node(
                result_tables,
                inputs=["summary", "shift"],
                outputs=["ablation_table", "shift_table"],
                name="result_tables",
            ),
            Node(
                plot_direct_training,
                inputs=["direct_training_log", "settings"],
                outputs="direct_training_curve",
                name="plot_direct_training",
            ),
            Node(
                plot_calibration,
                inputs="calibration",
                outputs="calibration_curves",
                name="plot_calibration",
            ),
            Node(
                plot_thresholds,
                inputs="threshold_report",
                outputs="threshold_plot",
                name="plot_thresholds",
            ),
            Node(
                plot_tuning,
                inputs=["tuning_report", "settings"],
                outputs="tuning_plot",
                name="plot_tuning",
            ),
            Node(
                plot_finetuning,
                inputs=["finetune_log", "tuning_report"],
                outputs="finetune_curve",
                name="plot_finetuning",
            ),
            Node(plot_energy, inputs="evaluation", outputs="energy_plot", name="plot_energy"),
            Node(
                plot_ablation,
                inputs=["ablation", "evaluation", "settings"],
                outputs="ablation_plot",
                name="plot_ablation",
            ),
            Node(plot_shift_accuracy, inputs="shift", outputs="shift_plot", name="plot_shift"),
            Node(
                plot_shift_energy,
                inputs="shift",
                outputs="shift_energy_plot",
                name="plot_shift_energy",
            ),
            Node(plot_stream, inputs="shift", outputs="stream_curve", name="plot_stream"),
            Node(
                export_nir,
                inputs=["direct_model", "event_model", "settings"],
                outputs=["direct_nir", "event_nir"],
                name="export_nir",
            ),
            Node(
                register_networks,
                inputs=[
                    "direct_model",
                    "event_model",
                    "summary",
                    "settings",
                    "direct_nir",
                    "event_nir",
                ],
                outputs="registry_report",
                name="register_networks",
            ),
        ]
    )
