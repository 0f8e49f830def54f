"""A seeds study from its runs' reports: mean, std and worst of each figure, with values."""

from __future__ import annotations

import statistics

import pytest

from direct2event.glue import seed_study
from direct2event.glue.reports import (
    Baselines,
    MethodSummary,
    Recalibration,
    SeedRun,
    ShiftReport,
    TuningReport,
)


def run(seed: int, direct: float, event: float, reduction: float) -> SeedRun:
    return SeedRun(
        seed=seed,
        direct_accuracy=direct,
        event_accuracy=event,
        accuracy_retention=event / direct,
        energy_reduction=reduction,
        energy_reduction_by_model={"per_event": reduction, "synops_45nm": 3 * reduction},
        energy_reduction_ceiling=None,
        events_per_sample=100.0 * seed,
        synops_per_sample=1000.0 * seed,
        rate_lambda=2.0,
    )


def test_aggregate_mean_std_and_worst() -> None:
    runs = [run(0, 0.99, 0.985, 7.0), run(1, 0.98, 0.977, 6.0), run(2, 0.99, 0.99, 8.5)]
    tuning = [TuningReport(rate_lambda=2.0, enabled=True, retention_floor=0.995)] * 3
    study = seed_study.aggregate("mnist", runs, {"machine": "cpu", "torch": "2"}, tuning)
    assert study.seeds == [0, 1, 2] and study.machine == "cpu"
    assert study.mean["energy_reduction"] == pytest.approx(7.1666666)
    assert study.std["energy_reduction"] == pytest.approx(statistics.stdev([7.0, 6.0, 8.5]))
    assert study.worst["accuracy_retention"] == pytest.approx(0.985 / 0.99)
    assert study.worst["energy_reduction"] == 6.0
    assert study.worst["energy_reduction_by_model"] == {"per_event": 6.0, "synops_45nm": 18.0}
    assert study.retention_floor == 0.995  # the runs' own floor, drawn in the figure
    with pytest.raises(ValueError, match="no seed"):
        seed_study.aggregate("mnist", [], {"machine": "cpu", "torch": "2"})


def shift_report(seed: int, recovered: float, cost: float, recovery: int | None) -> ShiftReport:
    """A hand-made shift report with one method."""
    method = MethodSummary(
        qualifying_shifts=["contrast"],
        recovered_fraction=recovered,
        recovered_fraction_by_shift={"contrast": recovered},
        clean_cost_pp=cost,
        clean_events_change=-0.02 * (seed + 1),
        shift_events_change=0.1 * (-1) ** seed,
        shift_events_change_by_shift={"contrast": 0.1 * (-1) ** seed},
        recovery_samples=recovery,
        recovery_to_shift=recovery,
        recovery_back=recovery,
    )
    return ShiftReport(
        enabled=True,
        seed=seed,
        samples=500,
        seconds=30.0,
        summary={"modulation": method},
        baselines=Baselines(
            recalibration=Recalibration(samples=128, recovered_fraction=0.8), calibration_sizes=[]
        ),
        mean_corruption_error={"event": 0.2, "modulation": 0.1},
    )


def test_shift_study_mean_std_and_worst_against_the_targets() -> None:
    reports = [shift_report(0, 0.6, 0.1, 120), shift_report(1, 0.4, -0.1, 200)]
    study = seed_study.shift_study(reports, [300.0, 270.0])
    m = study.methods["modulation"]
    assert m.recovered_fraction.mean == pytest.approx(0.5)
    assert m.recovered_fraction.worst == 0.4  # least recovered
    assert m.clean_cost_pp.worst == 0.1  # most costly
    assert m.clean_events_change.worst == pytest.approx(-0.04)  # largest either way
    assert m.recovery_samples.worst == 200
    assert study.stage_share["worst"] == pytest.approx(30 / 270)
    separately = seed_study.shift_study(reports, [300.0, 270.0], stage_inside=False)
    assert separately.stage_share["worst"] == pytest.approx(30 / 300)
    never = seed_study.shift_study([shift_report(0, 0.6, 0.1, None)], [300.0])
    assert never.methods["modulation"].recovery_samples.mean is None
    assert seed_study.shift_study([ShiftReport(enabled=False)], [1.0]) is None


def test_the_front_over_seeds_alone_and_with_each_method() -> None:
    """Event data: the front's recovered share, worst events change and clean cost, alone and
    with each method, over the seeds (worst: least recovered, largest change, most cost)."""
    reports = []
    for seed, (rec, ev, cost) in enumerate([(0.8, 0.12, 1.0), (0.6, -0.14, 0.2)]):
        front = {
            "recovered_fraction": rec / 2,
            "events_change": 2 * ev,
            "clean_cost_pp": 0.2,
            "recovered_fraction_by_method": {"modulation": rec},
            "events_change_by_method": {"modulation": ev},
            "clean_cost_pp_by_method": {"modulation": cost},
        }
        reports.append(shift_report(seed, 0.5, 0.1, 100).model_copy(update={"front": front}))
    study = seed_study.shift_study(reports, [300.0, 270.0])
    assert study.front["modulation"].mean == pytest.approx(0.7)
    assert study.front["modulation"].worst == 0.6 and study.front["alone"].worst == 0.3
    assert study.front_events_change["modulation"].worst == pytest.approx(-0.14)
    assert study.front_events_change["alone"].worst == pytest.approx(-0.28)
    assert study.front_clean_cost_pp["modulation"].mean == pytest.approx(0.6)
    assert study.front_clean_cost_pp["modulation"].worst == 1.0
    assert study.front_clean_cost_pp["alone"].std == 0.0
