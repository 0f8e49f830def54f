"""Conversion of network D into network E: surrogate-to-spike calibration (step 3) and adaptive
threshold scaling (step 4)."""

from __future__ import annotations

import logging
import math
from typing import Any

from direct2event.data.splits import DataSplits
from direct2event.glue.params import PipelineParams
from direct2event.snn.calibration import LayerStatistics
from direct2event.snn.conversion import build_event_network, calibrate
from direct2event.snn.models import checkpoint, restore
from direct2event.snn.thresholds import ThresholdReport

logger = logging.getLogger(__name__)


def calibrate_surrogate(
    direct_model: dict[str, Any], splits: DataSplits, settings: PipelineParams
) -> tuple[dict[str, Any], dict[str, dict]]:
    """Step 3: fit the monotonic map g: D's activation -> E's spikes per step, per layer, on the
    calibration split; returns the maps with the channel statistics, and their fit errors."""
    cal_p = settings.transfer.calibration
    cal = splits.calibration.head(cal_p.max_samples)
    direct, event = settings.direct_coding, settings.event_coding
    maps, stats = calibrate(
        restore(direct_model),
        cal,
        direct,
        event,
        settings.device,
        cal_p.max_points,
        settings.seed,
    )
    metrics: dict[str, dict] = {}
    for m in maps:
        logger.info(
            "calibration %s: rmse %.4f, R2 %.3f (%d points)", m.layer, m.rmse, m.r2, m.points
        )
        metrics[f"calibration.{m.layer}.rmse"] = {"value": m.rmse, "step": 0}
        if math.isfinite(m.r2):
            metrics[f"calibration.{m.layer}.r2"] = {"value": m.r2, "step": 0}
    return {"maps": maps, "stats": stats, "samples": len(cal)}, metrics


def scale_event_thresholds(
    direct_model: dict[str, Any],
    calibration: dict[str, Any],
    splits: DataSplits,
    settings: PipelineParams,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, dict]]:
    """Step 4: per-channel thresholds of E so that its rates match D's activations on the
    calibration split. The report holds each channel's target, naive and scaled rate."""
    th = settings.transfer.thresholds
    cal = splits.calibration.head(settings.transfer.calibration.max_samples)
    stats: list[LayerStatistics] = calibration["stats"]
    event_model, reports = build_event_network(
        restore(direct_model),
        stats,
        cal,
        settings.event_coding,
        settings.device,
        th.config(),
        settings.seed,
    )
    report: dict[str, Any] = {"method": th.method, "layers": []}
    metrics: dict[str, dict] = {}
    for r, s in zip(reports, stats, strict=True):
        before = ThresholdReport.mismatch(s.event_rate, s.direct_mean)
        after = ThresholdReport.mismatch(r.rate_after, s.direct_mean)
        report["layers"].append(
            {
                "layer": r.layer,
                "rate_mismatch_before": before,
                "rate_mismatch_after": after,
                "threshold_mean": float(r.thresholds.mean()),
                "threshold_min": float(r.thresholds.min()),
                "threshold_max": float(r.thresholds.max()),
                "target_rate": [float(v) for v in s.direct_mean],
                "rate_before": [float(v) for v in s.event_rate],
                "rate_after": [float(v) for v in r.rate_after],
            }
        )
        metrics[f"thresholds.{r.layer}.rate_mismatch_before"] = {"value": before, "step": 0}
        metrics[f"thresholds.{r.layer}.rate_mismatch_after"] = {"value": after, "step": 0}
        logger.info("thresholds %s: rate mismatch %.3f -> %.3f", r.layer, before, after)
    return checkpoint(event_model), report, metrics
