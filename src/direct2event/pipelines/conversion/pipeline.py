"""Wiring of the conversion stage: calibration, then threshold scaling."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from direct2event.pipelines.conversion.nodes import (
    calibrate_surrogate,
    scale_event_thresholds,
)


def create_pipeline(**kwargs: object) -> Pipeline:
    """direct_model -> calibration -> scaled_model (E with scaled thresholds)."""
    return Pipeline(
        [
            Node(
                calibrate_surrogate,
                inputs=["direct_model", "splits", "settings"],
                outputs=["calibration", "calibration_metrics"],
                name="calibrate_surrogate",
            ),
            Node(
                scale_event_thresholds,
                inputs=["direct_model", "calibration", "splits", "settings"],
                outputs=["scaled_model", "threshold_report", "threshold_metrics"],
                name="scale_event_thresholds",
            ),
        ]
    )
