"""The shift benchmark (``shift.json``): D and E on shifted test data, E with online threshold
adaptation, the baselines and the stream test (:mod:`direct2event.pipelines.shift.bench`)."""

from __future__ import annotations

import logging
import math
from typing import Any

from direct2event.data.splits import DataSplits
from direct2event.glue import tracking
from direct2event.glue.params import PipelineParams
from direct2event.glue.reports import ShiftReport
from direct2event.pipelines.shift.bench import ShiftBench
from direct2event.snn.models import restore

logger = logging.getLogger(__name__)


def benchmark_shifts(
    direct_model: dict[str, Any],
    scaled_model: dict[str, Any],
    event_model: dict[str, Any],
    splits: DataSplits,
    raw_data: Any,
    settings: PipelineParams,
) -> tuple[ShiftReport, dict[str, dict]]:
    """``shift.json`` and its MLflow metrics ``shift.<name>.<level>.*`` (level 1..3 = mild,
    middle, strong severity), or a report that says the stage is off (``shift.enabled``)."""
    if not settings.shift.enabled:
        logger.info("Shift benchmark off (shift.enabled: false).")
        return ShiftReport(enabled=False), {}
    networks = (restore(direct_model), restore(scaled_model), restore(event_model))
    report = ShiftBench(*networks, splits, raw_data, settings).run()
    return report, _metrics(report)


SHIFT_METRICS = ("recovered_fraction", "shift_events_change")  # per method: the targets


def _metrics(report: ShiftReport) -> dict[str, dict]:
    """The benchmark's summary as at most a dozen MLflow metrics: clean E, E's mean corruption
    error, and per adaptation method the share of E's loss it wins back and its events' worst
    change under shift (every row is in ``shift.json`` and the table ``tables/shift.json``)."""
    m: dict[str, float | None] = {
        "shift.clean.event_accuracy": report.clean.e_accuracy,
        "shift.mce.event": report.mean_corruption_error.get("event"),
    }
    for method, s in report.summary.items():
        for key in SHIFT_METRICS:
            m[f"shift.{method}.{key}"] = getattr(s, key)
    if report.front:  # event data: the clean front alone
        m["shift.front.recovered_fraction"] = report.front.get("recovered_fraction")
    return {
        k: {"value": tracking.rounded(float(v)), "step": 0}
        for k, v in m.items()
        if v is not None and math.isfinite(v)
    }
