from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import mean_squared_error, r2_score

from direct2event.data.splits import DataSplits
from direct2event.pipelines.conversion.nodes import calibrate_surrogate, scale_event_thresholds
from direct2event.snn.calibration import layer_time_means
from direct2event.snn.models import restore, to_event_network


def test_calibrate_surrogate_fits_one_monotonic_map_per_layer(
    direct_model, digits_splits: DataSplits, settings
) -> None:
    """Each layer's map is scikit-learn's isotonic fit of the same (D activation, E rate at unit
    threshold) pairs, and its logged fit figures are that fit's RMSE and R^2."""
    calibration, metrics = calibrate_surrogate(direct_model, digits_splits, settings)
    maps = calibration["maps"]
    direct = restore(direct_model)
    assert [m.layer for m in maps] == [s.layer for s in calibration["stats"]]
    assert len(maps) == len(direct.lif_layers())
    assert calibration["samples"] == len(digits_splits.calibration) == 72
    cal, cpu = digits_splits.calibration, settings.device
    a_all = layer_time_means(direct, cal, settings.direct_coding, cpu, seed=settings.seed)
    naive = to_event_network(direct)
    r_all = layer_time_means(naive, cal, settings.event_coding, cpu, seed=settings.seed)
    rng = np.random.default_rng(settings.seed)  # the points the map was fitted on
    for m, a_t, r_t in zip(maps, a_all, r_all, strict=True):
        a, r = a_t.reshape(-1).numpy(), r_t.reshape(-1).numpy()  # float32, as the library reads
        pick = rng.choice(
            len(a), size=min(settings.transfer.calibration.max_points, len(a)), replace=False
        )
        x, y = a[pick].astype(np.float64), r[pick].astype(np.float64)  # the library fits in float64
        fit = IsotonicRegression(out_of_bounds="clip").fit(x, y)
        np.testing.assert_allclose(m(x), fit.predict(x), atol=1e-12)
        rmse = math.sqrt(mean_squared_error(y, fit.predict(x)))
        assert m.rmse == pytest.approx(rmse, abs=1e-9) and m.points == len(pick)
        assert m.r2 == pytest.approx(r2_score(y, fit.predict(x)), abs=1e-9)
        assert metrics[f"calibration.{m.layer}.rmse"] == {"value": m.rmse, "step": 0}
        assert m.is_monotonic()


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
