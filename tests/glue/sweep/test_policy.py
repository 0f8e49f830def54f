"""The choice of lambda, on records and without a study: selection over the floor, ties of
short trials, the energy target, the interpolation between two trials, the Pareto front, and
which trials are taken on to the full fine-tuning."""

from __future__ import annotations

import math

import pytest

from direct2event.glue.reports import TrialRecord
from direct2event.glue.sweep import policy
from direct2event.glue.sweep.policy import Choice


def rec(lam: float, acc: float, energy: float, number: int) -> TrialRecord:
    return TrialRecord(rate_lambda=lam, val_accuracy=acc, energy_nJ=energy, number=number)


HAND_MADE = [
    rec(0.5, 0.981, 0.025, 0),
    rec(1.0, 0.979, 0.020, 1),
    rec(3.0, 0.976, 0.012, 2),
    rec(10.0, 0.970, 0.008, 3),
    rec(2.0, 0.975, 0.030, 4),  # dominated by trial 1 and 2
]


def test_selection_takes_lowest_energy_above_the_retention_floor() -> None:
    # D has 0.98 on validation; floor 0.995 -> accuracy >= 0.9751: trials 0, 1, 2 qualify
    chosen, met = policy.select_trial(HAND_MADE, Choice(0.98, 0.995))
    assert (chosen.number, met) == (2, True)
    # a looser floor (0.985 -> 0.9653) admits trial 3, the cheapest
    assert policy.select_trial(HAND_MADE, Choice(0.98, 0.985))[0].number == 3
    # against a D with 0.99 nobody reaches 0.995 * 0.99 = 0.985: the most accurate, flagged
    chosen, met = policy.select_trial(HAND_MADE, Choice(0.99, 0.995))
    assert (chosen.number, met) == (0, False)
    with pytest.raises(policy.TuningError, match="no complete trial"):
        policy.select_trial([], Choice(0.98, 0.995))


def test_short_trials_within_one_standard_error_of_the_most_accurate_are_ties(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Quarter-pass trials (D 0.9918, none at the 0.995 floor): accuracies within
    sqrt(p (1 - p) / n) of the best cannot rank lambda, so the cheapest of them goes on."""
    trials = [
        rec(3.0, 0.9824, 0.060, 0),
        rec(6.26, 0.9780, 0.050, 1),  # 0.0044 under the best: more than 2 standard errors
        rec(0.50, 0.9838, 0.090, 2),  # the most accurate
        rec(3.7, 0.9821, 0.058, 3),  # 0.0017 under it: within one standard error (0.00179)
        rec(1.2, 0.9830, 0.075, 4),
    ]

    def order(n: int, se: float) -> list[int]:
        choice = Choice(0.9918, 0.995, validation_size=n, tie_standard_errors=se)
        return [t.number for t in policy.completion_order(trials, choice)]

    se = math.sqrt(0.9838 * 0.0162 / 5000)
    assert 0.9838 - se < 0.9821 < 0.9838 - se + 1e-4  # trial 3 just inside
    with caplog.at_level("INFO", logger=policy.__name__):
        assert order(5000, 1.0) == [3, 0, 4, 2]  # lowest energy first; 6.26 out
    assert "λ = 3.7, 3, 1.2, 0.5 tie within 1 standard errors" in caplog.text
    # two standard errors admit lambda = 6.26 too? 0.9838 - 2 * 0.0018 = 0.9802 > 0.9780: no
    assert order(5000, 2.0) == [3, 0, 4, 2]
    # on 400 samples the standard error is 0.0063: every trial is a tie, the cheapest leads
    assert order(400, 1.0)[0] == 1
    # 0 standard errors: the most accurate alone
    assert order(5000, 0.0) == [2]
    # a trial at the floor at trial length is a candidate: ties play no part then
    trials.append(rec(2.0, 0.9870, 0.070, 5))
    assert order(5000, 1.0) == [5]


def test_an_energy_reduction_target_takes_the_weakest_penalty_reaching_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Quarter-pass trials (D spends 0.0553 nJ per sample on validation): the weakest lambda
    whose reduction reaches the target at trial length goes on."""
    trials = [
        rec(3.0, 0.9828, 0.00869, 0),  # 0.0553 / 0.00869 = 6.36x
        rec(6.26, 0.9784, 0.00670, 1),  # 8.25x
        rec(1.0, 0.9836, 0.01250, 2),  # 4.42x
        rec(0.5, 0.9840, 0.01800, 3),  # 3.07x
        rec(3.52, 0.9798, 0.00836, 4),  # 6.61x
    ]

    def choice(target: float | None) -> Choice:
        return Choice(0.9864, 0.995, None, 1, 5000, 1.0, 0.0553, target)

    reached = policy.reaching_target(trials, 0.0553, 4.0)
    assert [t.number for t in reached] == [2, 0, 4, 1]  # lambda 1, 3, 3.52, 6.26
    with caplog.at_level("INFO", logger=policy.__name__):
        order = policy.completion_order(trials, choice(4.0))
    assert [t.number for t in order] == [2, 0, 4, 1]
    assert "λ = 1, 3, 3.52, 6.26 reach an energy reduction of 4 at trial length" in caplog.text
    # a target of 7x: only lambda = 6.26 reaches it
    assert [t.number for t in policy.completion_order(trials, choice(7.0))] == [1]
    # none reaches 10x: taken on by retention (here the accuracy ties), with a warning
    caplog.clear()
    with caplog.at_level("INFO", logger=policy.__name__):
        order = policy.completion_order(trials, choice(10.0))
    assert order == policy.completion_order(trials, choice(None))
    assert "No trial reaches an energy reduction of 10 at trial length" in caplog.text
    # without a target (or without D's energy) nothing changes
    assert policy.reaching_target(trials, 0.0553, None) == []
    assert policy.reaching_target(trials, 0.0, 4.0) == []
    # whole trials: the most accurate reaching the target (lambda = 1 at 0.9836; 0.9836 / 0.9864
    # = 0.99716 reaches the 0.995 floor), lowest energy reaching the floor without a target
    assert policy.select_trial(trials, choice(4.0)) == (trials[2], True)
    assert policy.select_trial(trials, choice(7.0)) == (trials[1], False)  # 0.9784: under it
    # without: the lowest energy reaching 0.995 * 0.9864 = 0.98147 (lambda 3, 1, 0.5): lambda 3
    assert policy.select_trial(trials, choice(None))[0].number == 0


def test_between_two_trials_the_lambda_meeting_the_target_is_interpolated() -> None:
    """D spends 0.04287 nJ on validation: lambda = 1 reaches 3.02x at trial length, 3 reaches
    4.97x; a 3.75x target lies between them on the line in (log lambda, log reduction):
    lambda = exp(0.4364 * ln 3) = 1.615."""
    trials = [
        rec(3.0, 0.9760, 0.04287 / 4.966, 0),
        rec(1.0, 0.9820, 0.04287 / 3.017, 1),
        rec(6.215, 0.9760, 0.04287 / 6.625, 3),
    ]
    t = (math.log(3.75) - math.log(3.017)) / (math.log(4.966) - math.log(3.017))
    assert t == pytest.approx(0.4364, abs=1e-4)
    lam = policy.interpolated_lambda(trials, 0.04287, 3.75)
    assert lam == pytest.approx(math.exp(t * math.log(3.0))) and lam == pytest.approx(1.615, 1e-3)
    # the weakest trial reaches it already, or nothing weaker was tried: no interpolation
    assert policy.interpolated_lambda(trials, 0.04287, 2.5) is None
    assert policy.interpolated_lambda(trials[:1], 0.04287, 3.75) is None
    # no trial reaches it, or no target
    assert policy.interpolated_lambda(trials, 0.04287, 8.0) is None
    assert policy.interpolated_lambda(trials, 0.04287, None) is None


def test_pareto_front_drops_dominated_trials_and_sorts_by_energy() -> None:
    front = policy.pareto_front(HAND_MADE)
    assert [t.number for t in front] == [3, 2, 1, 0]
    assert front[0] == rec(10.0, 0.97, 0.008, 3)
    assert policy.non_dominated({"a": (0.9, 1.0), "b": (0.9, 1.0), "c": (0.8, 2.0)}) == {"a", "b"}


def _numbered(number: int, lam: float, accuracy: float, energy: float) -> TrialRecord:
    return rec(lam, accuracy, energy, number)


def take(trials: list[TrialRecord], choice: Choice, complete) -> tuple:
    t = policy.take_on(trials, choice, complete)
    return t.chosen, t.feasible, t.completed, t.payload


def test_the_lowest_energy_candidate_is_taken_on_first_and_a_weaker_penalty_after_it_falls_short() -> (
    None
):
    """Trial-length results by hand (D at 1.0, required retention 0.996); the whole fine-tuning
    loses 0.0015 of accuracy and a fifth of the energy (as MNIST's checks overstate the end)."""
    trials = [
        _numbered(0, 1.5, 0.999, 3.0),
        _numbered(1, 3.0, 0.998, 2.0),
        _numbered(2, 6.0, 0.997, 1.5),
        _numbered(3, 20.0, 0.990, 1.0),  # under the bar at trial length: never a candidate
        _numbered(4, 10.0, 0.9965, 1.8),  # a stronger penalty than 6, which falls short
    ]
    order = [t.rate_lambda for t in policy.completion_order(trials, Choice(1.0, 0.996))]
    assert order == [6.0, 10.0, 3.0, 1.5]
    taken: list[float] = []

    def complete(lam: float):
        taken.append(lam)
        trial = next(t for t in trials if t.rate_lambda == lam)
        acc, energy = trial.val_accuracy - 0.0015, trial.energy_nJ * 0.8
        result = {"val_accuracy": acc, "energy_nJ": energy, "accuracy_retention": acc}
        return {**result, "events_per_sample": 1.0}, ("net", [{"epoch": 1.0}])

    chosen, met, done, (_, history) = take(trials, Choice(1.0, 0.996, completions=2), complete)
    assert taken == [6.0, 3.0]  # 10 skipped: it penalises more than 6, which fell short
    assert met and chosen.rate_lambda == 3.0 and chosen.number == 1
    assert chosen.val_accuracy == 0.998 - 0.0015 and chosen.energy_nJ == 2.0 * 0.8
    assert [r.rate_lambda for r in done] == [6.0, 3.0] and history == [{"epoch": 1.0}]
    # one completion allowed: the one that fell short is the most accurate completion
    taken.clear()
    chosen, met, done, _ = take(trials, Choice(1.0, 0.996), complete)
    assert taken == [6.0] and not met and chosen.rate_lambda == 6.0
    # candidates from the floor (0.995) at trial length: lambda = 4 (0.9955) joins them, but
    # after 6 ended 0.0005 short of 0.996, a candidate needs 0.997 + 0.0005 at trial length
    trials.append(_numbered(5, 4.0, 0.9955, 1.6))
    taken.clear()
    chosen, met, done, _ = take(trials, Choice(1.0, 0.996, 0.995, completions=3), complete)
    assert taken == [6.0, 3.0] and met and chosen.rate_lambda == 3.0
    trials.pop()
    # no trial reaches the bar at trial length: the most accurate alone is taken on
    assert [t.number for t in policy.completion_order(trials, Choice(1.0, 0.9995))] == [0]


def test_with_an_energy_target_between_two_trials_one_whole_run_at_the_lambda_between() -> None:
    """Trials at lambda 1 (3.02x) and 3 (4.97x) bracket a 3.75x target: the one completion is
    a whole fine-tuning at the interpolated lambda (1.615), recorded without a trial number."""
    trials = [_numbered(0, 3.0, 0.976, 0.04287 / 4.966), _numbered(1, 1.0, 0.982, 0.04287 / 3.017)]
    runs: list[float] = []

    def complete(lam: float):
        runs.append(lam)
        return {"val_accuracy": 0.9841, "energy_nJ": 0.0051}, ("net", [{"epoch": 1.0}])

    choice = Choice(0.988, 0.996, completions=2, direct_energy=0.04287, energy_target=3.75)
    chosen, met, done, (_, history) = take(trials, choice, complete)
    assert runs == [pytest.approx(1.615, 1e-3)] and history == [{"epoch": 1.0}]
    assert (chosen.rate_lambda, chosen.number, chosen.val_accuracy) == (runs[0], None, 0.9841)
    assert done == [chosen] and met is True  # 0.9841 >= 0.996 * 0.988 = 0.98405


def test_after_a_shortfall_a_nearly_equal_penalty_is_skipped_for_a_clearly_weaker_one() -> None:
    """lambda = 3.72 falls short by 0.0008 after the whole fine-tuning: 3.71, with the same
    trial-length accuracy, would too, so 2.0 is taken on; when no candidate promises enough,
    the most accurate trial with a weaker penalty (even one under the candidate bar) is."""
    trials = [
        _numbered(0, 3.72, 0.9960, 1.0),
        _numbered(1, 3.71, 0.9961, 1.01),
        _numbered(2, 2.0, 0.9975, 1.4),
        _numbered(3, 9.0, 0.9950, 0.8),  # under the candidate bar
    ]
    taken: list[float] = []
    loss = {3.72: 0.0008, 3.71: 0.0008, 2.0: 0.0010, 9.0: 0.0}

    def complete(lam: float):
        taken.append(lam)
        trial = next(t for t in trials if t.rate_lambda == lam)
        acc = trial.val_accuracy - loss[lam]
        result = {"val_accuracy": acc, "energy_nJ": trial.energy_nJ, "accuracy_retention": acc}
        return {**result, "events_per_sample": 1.0}, ("net", [])

    chosen, met, done, _ = take(trials, Choice(1.0, 0.996, 0.996, completions=2), complete)
    assert taken == [3.72, 2.0] and met and chosen.rate_lambda == 2.0
    assert [r.val_accuracy for r in done] == [0.9960 - 0.0008, 0.9975 - 0.0010]
    # 2.0 starts too low to make up 3.72's shortfall (0.9960 + 0.0008 > 0.9967): no candidate is
    # predicted to reach it, so the most accurate weaker one is the second completion
    trials[2] = _numbered(2, 2.0, 0.9967, 1.4)
    trials.append(_numbered(4, 1.0, 0.9958, 2.0))  # weaker still, but less accurate
    taken.clear()
    chosen, met, done, _ = take(trials, Choice(1.0, 0.996, 0.996, completions=2), complete)
    assert taken == [3.72, 2.0] and not met and len(done) == 2
    assert chosen.rate_lambda == 2.0 and chosen.val_accuracy == 0.9967 - 0.0010


def test_the_noise_aware_margin_is_standard_errors_of_the_validation_retention() -> None:
    """With margin_standard_errors the margin is that many binomial standard errors of a
    retention at the floor on the validation samples (or retention_margin, if larger), and the
    choice is the lowest-energy (strongest) trial clearing floor + margin."""
    from direct2event.glue.sweep import policy as policy_module
    from direct2event.glue.sweep.config import ChoiceConfig, StudyConfig, SweepConfig

    choice = ChoiceConfig(retention_floor=0.995, retention_margin=0.001, margin_standard_errors=2)
    p = 0.995 * 0.99  # D at 0.99: an E at the floor
    se = math.sqrt(p * (1 - p) / 5000) / 0.99
    assert choice.margin(0.99, 5000) == pytest.approx(2 * se)  # 0.0028 > 0.001
    assert choice.margin(0.99, 10**7) == 0.001  # plenty of samples: the fixed margin
    assert ChoiceConfig().margin(0.99, 5000) == 0.001  # off by default
    config = SweepConfig(dataset="digits", study=StudyConfig(name="x"), choice=choice)
    policy = config.policy(0.99, 10.0, 5000)
    assert policy.required == pytest.approx(0.995 + 2 * se)
    # retention on validation: 0.9985, 0.9975 (clears 0.995 + 0.001, not + 0.0028), 0.9955
    trials = [
        TrialRecord(rate_lambda=1.0, val_accuracy=0.99 * 0.9985, energy_nJ=3.0, number=0),
        TrialRecord(rate_lambda=3.0, val_accuracy=0.99 * 0.9975, energy_nJ=2.0, number=1),
        TrialRecord(rate_lambda=9.0, val_accuracy=0.99 * 0.9955, energy_nJ=1.0, number=2),
    ]
    assert policy_module.select_trial(trials, policy)[0].number == 0  # the noise-aware rule
    fixed = SweepConfig(dataset="digits", study=StudyConfig(name="x")).policy(0.99, 10.0, 5000)
    assert policy_module.select_trial(trials, fixed)[0].number == 1  # the fixed margin: stronger
