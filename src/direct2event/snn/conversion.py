"""Conversion of network D into network E: surrogate-to-spike calibration, then adaptive threshold
scaling (method steps 3 and 4; the fine-tuning that follows is :mod:`direct2event.snn.finetuning`)."""

from __future__ import annotations

import torch
from torch import Tensor

from direct2event.snn.calibration import (
    CalibrationMap,
    LayerStatistics,
    fit_calibration,
    layer_time_means,
)
from direct2event.snn.encoders import InputCoding
from direct2event.snn.models import SpikingNet, to_event_network
from direct2event.snn.thresholds import (
    THRESHOLD_MAX,
    THRESHOLD_MIN,
    ThresholdConfig,
    ThresholdReport,
    scale_thresholds,
)
from direct2event.snn.training import Split


def lif_layer_names(model: SpikingNet) -> list[str]:
    lifs = {id(m) for m in model.lif_layers()}
    return [n for n, m in model.named_modules() if id(m) in lifs]


def calibrate(
    direct_model: SpikingNet,
    data: Split,
    direct: InputCoding,
    event: InputCoding,
    device: torch.device,
    max_points: int = 200_000,
    seed: int = 0,
) -> tuple[list[CalibrationMap], list[LayerStatistics]]:
    """Fit ``g`` per layer from D (direct input) and naive E (unit thresholds, event input)."""
    naive = to_event_network(direct_model)
    direct_means = layer_time_means(direct_model, data, direct, device, seed=seed)
    event_means = layer_time_means(naive, data, event, device, seed=seed)
    return fit_calibration(direct_means, event_means, lif_layer_names(naive), max_points, seed)


def closed_form_thresholds(stats: list[LayerStatistics]) -> list[Tensor]:
    """``theta0 = mean g(a) / mean a`` per channel (non-leaky IF with reset by subtraction)."""
    starts = []
    for s in stats:
        ratio = s.mapped_mean / s.direct_mean.clamp(min=1e-6)
        ratio = torch.where(s.mapped_mean > 0, ratio, torch.ones_like(ratio))
        starts.append(ratio.clamp(THRESHOLD_MIN, THRESHOLD_MAX))
    return starts


def build_event_network(
    direct_model: SpikingNet,
    stats: list[LayerStatistics],
    data: Split,
    event: InputCoding,
    device: torch.device,
    cfg: ThresholdConfig = ThresholdConfig(),
    seed: int = 0,
) -> tuple[SpikingNet, list[ThresholdReport]]:
    """Network E from D with thresholds scaled on the calibration split."""
    event_model = to_event_network(direct_model)
    reports = scale_thresholds(
        event_model,
        data,
        event,
        device,
        cfg,
        targets=[s.direct_mean for s in stats],
        starts=closed_form_thresholds(stats),
        seed=seed,
    )
    if cfg.method == "percentile":
        for report, s in zip(reports, stats, strict=True):
            report.target_rate = s.direct_mean
    return event_model, reports
