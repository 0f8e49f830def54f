from __future__ import annotations

import pytest
import torch

from direct2event.snn.conversion import build_event_network, calibrate
from direct2event.snn.encoders import InputCoding
from direct2event.snn.thresholds import (
    ThresholdConfig,
    ThresholdError,
    ThresholdReport,
    check_thresholds,
)
from direct2event.snn.training import evaluate

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def calibrated(digits_splits, digits_direct_model):
    return calibrate(
        digits_direct_model,
        digits_splits.calibration,
        InputCoding("analog", 4),
        InputCoding("rate", 4),
        CPU,
    )


def test_isotonic_scaling_matches_target_rates(
    digits_splits, digits_direct_model, calibrated
) -> None:
    _, stats = calibrated
    event, reports = build_event_network(
        digits_direct_model,
        stats,
        digits_splits.calibration,
        InputCoding("rate", 4),
        CPU,
        ThresholdConfig("isotonic"),
    )
    for report, s in zip(reports, stats, strict=True):
        before = ThresholdReport.mismatch(s.event_rate, s.direct_mean)
        after = ThresholdReport.mismatch(report.rate_after, s.direct_mean)
        # stated tolerance: mean absolute rate error within 5 % of the mean target rate
        assert after < 0.05
        assert after < before
        assert torch.all(report.thresholds > 0) and torch.all(torch.isfinite(report.thresholds))
    # the scaled network E still classifies (well above chance) with rate input
    assert evaluate(event, digits_splits.test, InputCoding("rate", 4), CPU) > 0.8


def test_percentile_baseline_runs_and_sets_thresholds(
    digits_splits, digits_direct_model, calibrated
) -> None:
    _, stats = calibrated
    event, reports = build_event_network(
        digits_direct_model,
        stats,
        digits_splits.calibration,
        InputCoding("rate", 4),
        CPU,
        ThresholdConfig("percentile", 99.9),
    )
    for lif, report in zip(event.lif_layers(), reports, strict=True):
        assert torch.equal(lif.threshold, report.thresholds)
        assert torch.all(report.thresholds > 0)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_zero_or_nan_thresholds_are_refused(bad: float) -> None:
    with pytest.raises(ThresholdError, match="channels \\[1\\]"):
        check_thresholds("layers.2", torch.tensor([1.0, bad, 2.0]))
