from __future__ import annotations

import math

import torch

from direct2event.data.splits import DataSplits
from direct2event.pipelines.conversion.nodes import calibrate_surrogate, scale_event_thresholds
from direct2event.snn.models import restore


def test_calibrate_surrogate_fits_one_monotonic_map_per_layer(
    direct_model, digits_splits: DataSplits, settings
) -> None:
    calibration, metrics = calibrate_surrogate(direct_model, digits_splits, settings)
    maps = calibration["maps"]
    assert [m.layer for m in maps] == [s.layer for s in calibration["stats"]]
    assert len(maps) == len(restore(direct_model).lif_layers())
    assert calibration["samples"] == len(digits_splits.calibration) == 72
    for m in maps:
        assert all(b >= a for a, b in zip(m.knots_r, m.knots_r[1:], strict=False))  # monotonic
        assert metrics[f"calibration.{m.layer}.rmse"] == {"value": m.rmse, "step": 0}
        assert 0 <= m.rmse < 0.5 and (math.isnan(m.r2) or m.r2 <= 1)


def test_scale_event_thresholds_moves_rates_towards_d(
    direct_model, calibration, digits_splits: DataSplits, settings
) -> None:
    model, report, metrics = scale_event_thresholds(
        direct_model, calibration, digits_splits, settings
    )
    net = restore(model)
    assert net.mode == "binary"
    assert report["method"] == "isotonic" and len(report["layers"]) == len(net.lif_layers())
    for layer, lif in zip(report["layers"], net.lif_layers(), strict=True):
        channels = len(layer["target_rate"])
        assert len(layer["rate_before"]) == len(layer["rate_after"]) == channels
        assert layer["rate_mismatch_after"] < layer["rate_mismatch_before"]
        assert 0 < layer["threshold_min"] <= layer["threshold_mean"] <= layer["threshold_max"]
        assert torch.all(lif.threshold > 0)
        key = f"thresholds.{layer['layer']}.rate_mismatch_after"
        assert metrics[key]["value"] == layer["rate_mismatch_after"]
