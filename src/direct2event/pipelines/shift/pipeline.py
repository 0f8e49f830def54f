"""Wiring of the shift benchmark (after event evaluation; evaluation only)."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from direct2event.pipelines.shift.nodes import benchmark_shifts


def create_pipeline(**kwargs: object) -> Pipeline:
    """D, E and the test data -> shift.json and its metrics (figures: reporting stage)."""
    return Pipeline(
        [
            Node(
                benchmark_shifts,
                inputs=[
                    "direct_model",
                    "scaled_model",
                    "event_model",
                    "splits",
                    "raw_data",
                    "settings",
                ],
                outputs=["shift", "shift_metrics"],
                name="benchmark_shifts",
            )
        ]
    )
