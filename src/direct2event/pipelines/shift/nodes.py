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


def _metrics(report: ShiftReport) -> dict[str, dict]:
    """Dataset-neutral MLflow metrics of the report (energy in nJ, as every energy metric)."""
    m: dict[str, float | None] = {
        "shift.clean.event_accuracy": report.clean.e_accuracy,
        "shift.clean.direct_accuracy": report.clean.d_accuracy,
        "shift.seconds": report.seconds,
    }
    for method, v in report.clean.adapted.items():
        m[f"shift.clean.{method}.event_accuracy"] = v.accuracy
        m[f"shift.clean.{method}.events_per_sample"] = v.events_per_sample
    for r in report.rows:
        base = f"shift.{r.shift}.{r.level}"
        m[f"{base}.direct_accuracy"] = r.d_accuracy
        m[f"{base}.event_accuracy"] = r.e_accuracy
        m[f"{base}.events_per_sample"] = r.e_events_per_sample
        for model, uj in r.e_energy_uJ_by_model.items():
            m[f"{base}.{model}.energy_uJ"] = uj
        for method, v in r.adapted.items():
            m[f"{base}.{method}.event_accuracy"] = v.accuracy
            m[f"{base}.{method}.events_per_sample"] = v.events_per_sample
        if r.recalibrated is not None:
            m[f"{base}.recalibrated.event_accuracy"] = r.recalibrated.accuracy
    for method, s in report.summary.items():
        for key in (
            "recovered_fraction",
            "clean_cost_pp",
            "clean_events_change",
            "shift_events_change",
            "recovery_samples",
        ):
            m[f"shift.{method}.{key}"] = getattr(s, key)
    for name, value in report.mean_corruption_error.items():
        m[f"shift.mce.{name}"] = value
    return {
        k: {"value": float(v), "step": 0}
        for k, v in tracking.in_nanojoules(m).items()
        if v is not None and math.isfinite(v)
    }
