from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.isotonic import IsotonicRegression

from direct2event.snn.calibration import CalibrationError, fit_calibration, pav
from direct2event.snn.conversion import calibrate
from direct2event.snn.encoders import InputCoding


def test_pav_matches_sklearn_isotonic_regression() -> None:
    rng = np.random.default_rng(0)
    x = np.round(rng.random(3000), 2)  # many ties
    y = np.sqrt(x) + rng.normal(0, 0.2, x.size)
    knots_x, knots_y = pav(x, y)
    ours = np.interp(x, knots_x, knots_y)
    ref = IsotonicRegression(out_of_bounds="clip").fit(x, y).predict(x)
    assert np.allclose(ours, ref, atol=1e-9)
    assert np.all(np.diff(knots_y) >= 0)


def test_calibration_maps_are_monotonic_and_fit(digits_splits, digits_direct_model) -> None:
    maps, stats = calibrate(
        digits_direct_model,
        digits_splits.calibration,
        InputCoding("analog", 4),
        InputCoding("rate", 4),
        torch.device("cpu"),
    )
    assert [m.layer for m in maps] == ["layers.2", "layers.6"]
    for m, s in zip(maps, stats, strict=True):
        assert m.is_monotonic()
        assert m.points > 10_000
        assert 0 < m.rmse < 0.3
        assert m.r2 > 0.3  # g explains a good part of E's rate variance
        # one g per layer: it predicts E's unit-threshold rate of the layer as a whole (the
        # least-squares fit is unbiased on the pooled data), and of each channel roughly
        assert s.mapped_mean.mean() == pytest.approx(float(s.event_rate.mean()), abs=0.01)
        assert torch.allclose(s.mapped_mean, s.event_rate, atol=0.1)


def test_too_small_calibration_split_is_refused() -> None:
    few = [torch.rand(5, 8)]
    with pytest.raises(CalibrationError, match="at least"):
        fit_calibration(few, few, ["layer"])


def test_non_finite_activations_are_refused() -> None:
    a = torch.rand(40, 8)
    a[0, 0] = float("nan")
    with pytest.raises(CalibrationError, match="non-finite"):
        fit_calibration([a], [torch.rand(40, 8)], ["layer"])
