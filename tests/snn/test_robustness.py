"""The shift benchmark's summary figures, by hand."""

from __future__ import annotations

import pytest

from direct2event.snn.robustness import (
    corruption_error,
    method_summary,
    qualifying_shifts,
    recovered_fraction,
)


def row(shift: str, level: int, e: float, adapted: float, events: float) -> dict:
    return {
        "shift": shift,
        "level": level,
        "e_accuracy": e,
        "d_accuracy": e,
        "adapted": {"m": {"accuracy": adapted, "events_per_sample": events}},
    }


ROWS = [
    row("noise", 1, 0.95, 0.97, 110.0),
    row("noise", 2, 0.60, 0.80, 130.0),  # loses 38 points, wins back 20
    row("noise", 3, 0.30, 0.50, 150.0),
    row("tilt", 1, 0.97, 0.97, 100.0),
    row("tilt", 2, 0.975, 0.97, 90.0),  # loses 0.5 points: does not count
    row("tilt", 3, 0.90, 0.90, 80.0),
    row("dim", 1, 0.90, 0.95, 80.0),
    row("dim", 2, 0.78, 0.96, 60.0),  # loses 20 points, wins back 18
    row("dim", 3, 0.50, 0.70, 50.0),
]
CLEAN = {
    "e_accuracy": 0.98,
    "e_events_per_sample": 100.0,
    "adapted": {"m": {"accuracy": 0.979, "events_per_sample": 102.0}},
}


def test_qualifying_shifts_are_those_losing_enough_at_the_middle_severity():
    assert [r["shift"] for r in qualifying_shifts(ROWS, 0.98, 0.02)] == ["noise", "dim"]
    assert recovered_fraction(0.98, 0.60, 0.80) == pytest.approx(20 / 38)
    with pytest.raises(ValueError, match="no accuracy lost"):
        recovered_fraction(0.9, 0.95, 0.96)


def test_method_summary_by_hand():
    s = method_summary("m", ROWS, CLEAN, 0.02)
    assert s["qualifying_shifts"] == ["noise", "dim"]
    assert s["recovered_fraction"] == pytest.approx((20 / 38 + 18 / 20) / 2)
    assert s["clean_cost_pp"] == pytest.approx(0.1)
    assert s["clean_events_change"] == pytest.approx(0.02)
    # the worst qualifying shift, signed: -40 % (dim) beats +30 % (noise)
    assert s["shift_events_change"] == pytest.approx(-0.4)
    assert s["shift_events_change_by_shift"] == pytest.approx({"noise": 0.3, "dim": -0.4})


def test_geometric_shifts_are_reported_apart_from_the_recovery():
    rotated = [{**r, "shift": "rotation"} for r in ROWS if r["shift"] == "dim"]
    s = method_summary("m", [*ROWS, *rotated], CLEAN, 0.02)
    assert s["qualifying_shifts"] == ["noise", "dim", "rotation"]
    assert s["geometric_shifts"] == ["rotation"]
    assert s["recovered_fraction"] == pytest.approx((20 / 38 + 18 / 20) / 2)  # not rotation
    assert s["recovered_fraction_geometric"] == pytest.approx(18 / 20)
    assert set(s["shift_events_change_by_shift"]) == {"noise", "dim", "rotation"}  # all count


def test_corruption_error_is_the_mean_error_over_severities():
    ce = corruption_error(ROWS)
    assert ce["noise"] == pytest.approx((0.05 + 0.40 + 0.70) / 3)
    assert corruption_error(ROWS, "adapted/m/accuracy")["dim"] == pytest.approx(
        (0.05 + 0.04 + 0.30) / 3
    )
