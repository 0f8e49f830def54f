"""The early-stop rule with values: when a trial stops (retention, events, an energy target),
the bar it must reach learnt from the study's complete trials, and the overstatement of early
checks on a line in log lambda."""

from __future__ import annotations

import dataclasses
import math

import pytest

from direct2event.glue.reports import TrialRecord
from direct2event.glue.sweep.early_stop import Bar, EarlyStop, overstatement


def rec(lam: float, acc: float, energy: float, number: int) -> TrialRecord:
    return TrialRecord(rate_lambda=lam, val_accuracy=acc, energy_nJ=energy, number=number)


def test_the_early_stop_rule_with_values() -> None:
    rule = EarlyStop(
        at=(0.1, 0.5), direct_accuracy=0.99, required=0.996, slack=0.004, events_tolerance=0.01
    )
    assert rule.steps(100) == {10: 0.1, 50: 0.5}
    assert rule.steps(4) == {1: 0.1, 2: 0.5}  # 0.1 of 4 steps rounds to 0: checked after 1
    assert rule.steps(1) == {}  # a check at the last step is the trial's own measurement
    check = {"fraction": 0.1, "val_accuracy": 0.9821, "events_per_sample": 1000.0}
    assert rule.reason(check, None) is None  # no complete trial yet: nothing stops
    bar = Bar(retention=0.996, feasible=True, events={0.1: 991.0}, offsets={})
    # 0.9821 / 0.99 = 0.99202 >= 0.996 - 0.004, and 1000 events <= 991 * 1.01 = 1000.91
    assert rule.reason(check, bar) is None
    low = {**check, "val_accuracy": 0.9819}  # 0.99182 < 0.992
    assert rule.reason(low, bar) == (
        "retention 0.9918 at 10% of its fine-tuning (final predicted 0.9918) is more than 0.004 "
        "under the required 0.9960"
    )
    busier = {**check, "events_per_sample": 1001.0}
    assert rule.reason(busier, bar) == (
        "1001 events per sample at 10% of its fine-tuning exceed the best feasible trial's 991 (+1%)"
    )
    # checks that overstated the final retention by 0.002: the same check now predicts 0.99002
    learnt = Bar(retention=0.996, feasible=True, events={}, offsets={0.1: 0.002})
    assert "final predicted 0.9900" in rule.reason(check, learnt)
    # a learnt spread narrows the slack to 2 standard errors: 0.0012 * 2 = 0.0024, so the
    # same check (predicted 0.99002) now stops; never under slack / 4 = 0.001
    narrow = Bar(0.996, True, {}, offsets={0.1: 0.002}, spreads={0.1: 0.0012})
    assert rule.slack_at(0.1, narrow) == pytest.approx(0.0024)
    assert "more than 0.0024 under the required" in rule.reason(check, narrow)
    tight = Bar(0.996, True, {}, offsets={0.1: 0.002}, spreads={0.1: 0.0001})
    assert rule.slack_at(0.1, tight) == 0.001 and rule.slack_at(0.5, tight) == 0.004
    wide = Bar(0.996, True, {}, offsets={0.1: 0.002}, spreads={0.1: 0.01})
    assert rule.slack_at(0.1, wide) == 0.004
    fixed = EarlyStop(at=(0.1,), direct_accuracy=0.99, required=0.996, slack_sd=None)
    assert fixed.slack_at(0.1, narrow) == 0.004
    # no feasible trial: the bar is the most accurate trial's retention, events do not count
    fallback = Bar(retention=0.9954, feasible=False, events={}, offsets={})
    assert rule.reason(busier, fallback) is None
    # with an energy target the weaker penalties are wanted: no stop for events
    targeted = dataclasses.replace(rule, events_tolerance=None)
    assert targeted.reason(busier, bar) is None
    assert "under the required 0.9960" in targeted.reason(low, bar)
    assert "under the best trial's 0.9954" in rule.reason(
        {**check, "val_accuracy": 0.981}, fallback
    )


def test_with_an_energy_target_only_the_trials_that_can_be_chosen_run() -> None:
    """Events per sample in units where D spends 23241 (7.64x over lambda = 2): lambda = 2
    reaches 7x, 1.303 misses it (6.29x)."""
    trials = [rec(2.0, 0.9890, 3042.15e-6, 0), rec(0.549, 0.9890, 5095.46e-6, 10)]
    trials.append(rec(1.303, 0.9890, 3693.48e-6, 13))
    checks = {
        n: [{"fraction": 0.1, "val_accuracy": 0.9900, "events_per_sample": e}]
        for n, e in ((0, 5599.1), (10, 6961.3), (13, 6696.6))
    }
    rule = EarlyStop(
        at=(0.1, 0.3),
        direct_accuracy=0.9924,
        required=0.996,
        events_tolerance=None,
        energy_target=7.0,
        direct_energy=0.023241,
    )
    bar = rule.bar(trials, checks)
    assert bar.reaching_lambda == 2.0 and bar.weaker_lambda == 1.303
    assert bar.weaker_events == {0.1: 6696.6}
    # stronger than lambda = 2: out whatever it measures (before its first step, see below)
    assert rule.outside_target(bar, 2.25) == (
        "λ = 2.25 is stronger than λ = 2, which already reaches the energy reduction target 7 "
        "at trial length: only the weakest trial reaching it can be taken on"
    )
    good = {"fraction": 0.1, "val_accuracy": 0.9900, "events_per_sample": 5470.1}
    assert rule.reason(good, bar, 2.25).startswith("λ = 2.25 is stronger than λ = 2")
    assert rule.outside_target(bar, 2.0) is None and rule.outside_target(bar, 1.6) is None
    # weaker than lambda = 1.303 and busier at the same check: on course to miss 7x too
    busy = {**good, "events_per_sample": 6813.3}
    assert rule.reason(busy, bar, 0.946) == (
        "6813 events per sample at 10% of its fine-tuning exceed the 6697 of λ = 1.303 at the "
        "same check, which misses the energy reduction target 7 at trial length (this weaker "
        "penalty is on course to miss it too)"
    )
    assert rule.reason({**busy, "events_per_sample": 6600.0}, bar, 0.946) is None
    assert rule.reason(busy, bar, 1.6) is None  # between the two: the interpolation's range
    assert rule.reason({**busy, "fraction": 0.3}, bar, 0.946) is None  # no check to compare
    # no trial reaches 8x yet: nothing stops for its lambda or for the weaker trial's events
    unreached = dataclasses.replace(rule, energy_target=8.0).bar(trials, checks)
    assert unreached.reaching_lambda is None and unreached.weaker_events == {}
    assert rule.outside_target(unreached, 40.0) is None
    # without a target (or whole trials, where the node passes none) the rule is off
    off = dataclasses.replace(rule, energy_target=None)
    assert (
        off.bar(trials, checks).reaching_lambda is None
        and off.reason(busy, off.bar(trials, checks), 40.0) is None
    )


def test_the_overstatement_grows_with_lambda_on_a_line_learnt_from_four_trials() -> None:
    import numpy as np

    # the 30 % checks of four one-pass trials (lambda 2, 3, 6.26, 8.03)
    lams, gaps = [2.0, 3.0, 6.26, 8.03], [0.0014, 0.0022, 0.0043, 0.0049]
    points = [(math.log(lam), gap) for lam, gap in zip(lams, gaps, strict=True)]
    mean, error, (slope, centre) = overstatement(points)
    fitted_slope, fitted_icpt = np.polyfit([p[0] for p in points], gaps, 1)
    assert slope == pytest.approx(fitted_slope) and mean == pytest.approx(np.mean(gaps))
    residuals = np.array(gaps) - np.polyval([fitted_slope, fitted_icpt], [p[0] for p in points])
    assert error == pytest.approx(np.sqrt((residuals**2).sum() / 2) * np.sqrt(1 + 1 / 4))
    bar = Bar(0.996, True, {}, {0.3: mean}, {0.3: error}, {0.3: (slope, centre)})
    assert bar.offset(0.3, 8.03) == pytest.approx(
        np.polyval([fitted_slope, fitted_icpt], math.log(8.03))
    )
    assert bar.offset(0.3, 2.0) < mean < bar.offset(0.3, 8.03) and bar.offset(0.3) == mean
    # the same check stops a strong penalty and keeps a weak one
    rule = EarlyStop(at=(0.3,), direct_accuracy=1.0, required=0.996)
    check = {"fraction": 0.3, "val_accuracy": 0.9972, "events_per_sample": 1.0}
    assert rule.reason(check, bar, 2.0) is None
    predicted = 0.9972 - bar.offset(0.3, 8.0)  # 0.9923, under 0.996 - 0.001 (slack / 4)
    assert f"final predicted {predicted:.4f}) is more than 0.001 under" in rule.reason(
        check, bar, 8.0
    )
    # three trials: the mean alone; a falling line is held flat
    assert overstatement(points[:3])[2] is None
    flat = overstatement([(x, -g) for x, g in points])
    assert flat[2][0] == 0.0


def test_the_bar_comes_from_the_studys_complete_trials() -> None:
    rule = EarlyStop(at=(0.1,), direct_accuracy=0.99, required=0.996)
    made = [rec(2.0, 0.987, 0.010, 0), rec(3.0, 0.9865, 0.008, 1), rec(9.0, 0.97, 0.004, 2)]
    checks = {  # every check read 0.00198 above the trial's final accuracy
        t.number: [
            {
                "fraction": 0.1,
                "val_accuracy": t.val_accuracy + 0.00198,
                "events_per_sample": 1e6 * t.energy_nJ,
            }
        ]
        for t in made
    }
    bar = rule.bar(made, checks)
    # lambda = 3 is feasible (0.9865 / 0.99 = 0.99646) and spends least: its events are the bar
    assert bar.feasible and bar.retention == 0.996 and bar.events == {0.1: 8000.0}
    assert bar.offsets[0.1] == pytest.approx(0.002)
    assert bar.spreads[0.1] == pytest.approx(0.0, abs=1e-12)  # they agree: no spread
    checks[0][0]["val_accuracy"] += 0.001  # overstated by 0.003, 0.002, 0.002
    spread = rule.bar(made, checks).spreads[0.1]
    assert spread == pytest.approx(0.001 / 0.99 / math.sqrt(3) * math.sqrt(1 + 1 / 3))
    assert rule.bar(made[:2], checks).offsets == {}  # fewer than 3 trials: no offset learnt
    none_feasible = rule.bar(made[2:], checks)
    assert not none_feasible.feasible and none_feasible.events == {}
    assert none_feasible.retention == pytest.approx(0.97 / 0.99)
    assert rule.bar([], checks) is None
