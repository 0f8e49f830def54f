"""When a sweep trial stops before the end of its fine-tuning: the rule (:class:`EarlyStop`),
what a trial must still reach (:class:`Bar`), and one trial's checks (:class:`Judge`). Pure:
the rule reads the study's complete trials as records and their checks; the study module
turns Optuna's trials into those."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from direct2event.glue.reports import TrialRecord
from direct2event.glue.sweep.policy import Choice, reaching_target, select_trial

Check = dict[str, float]  # one check: fraction, step, val_accuracy, events_per_sample, retention


class TrialStopped(Exception):
    """A trial stopped early by :class:`EarlyStop` (recorded as PRUNED in Optuna and MLflow)."""


@dataclass(frozen=True)
class Bar:
    """What a trial must still be able to reach at a check to stay in the sweep: the final
    ``retention`` that could get it chosen; the ``events`` per sample (by check fraction) of the
    best feasible trial, when one exists; and by how much a check's retention overstates the
    final one (``offsets``, learnt from the study's complete trials)."""

    retention: float
    feasible: bool
    events: dict[float, float]
    offsets: dict[float, float]
    spreads: dict[float, float] = field(default_factory=dict)  # its prediction's std error
    # the overstatement's growth per unit of log(lambda) and the mean log(lambda) it is centred
    # on, by fraction (learnt from four complete trials; none: the same offset for every lambda)
    slopes: dict[float, tuple[float, float]] = field(default_factory=dict)
    # with an energy target: the weakest complete trial reaching it at trial length (its lambda)
    # and the nearest weaker complete trial, which misses it (its lambda and events by check
    # fraction): the only two trials the sweep can still choose from or interpolate between
    reaching_lambda: float | None = None
    weaker_lambda: float | None = None
    weaker_events: dict[float, float] = field(default_factory=dict)

    def offset(self, fraction: float, rate_lambda: float | None = None) -> float:
        """How much a check at ``fraction`` overstates the final retention of a trial at
        ``rate_lambda`` (0 while nothing is learnt)."""
        base = self.offsets.get(fraction, 0.0)
        if rate_lambda is None or fraction not in self.slopes:
            return base
        slope, centre = self.slopes[fraction]
        return base + slope * (math.log(rate_lambda) - centre)


@dataclass(frozen=True)
class EarlyStop:
    """When a sweep trial stops before the end of its fine-tuning. Optuna's pruners do not
    serve multi-objective studies, so the rule is written here.

    At each fraction ``at`` of its optimizer steps a trial is measured on the sweep's
    validation samples. Its final retention (E / D) is predicted as the check's retention less
    the overstatement the study's complete trials showed at that check (the rate penalty keeps
    lowering accuracy, so early checks overstate it, more for a stronger penalty): their mean
    from three complete trials, a line in log lambda from four (:func:`overstatement`). The
    trial stops when the prediction is more than ``slack`` under what it needs to be chosen:
    ``required`` (floor + margin) once a feasible trial exists, else the retention of the most
    accurate complete trial (the choice when none is feasible). Once a feasible trial exists it
    also stops when its events per sample exceed that trial's at the same check by more than
    ``events_tolerance`` (a smaller lambda: it ends with more events than the trial it would
    have to beat). Nothing stops before the first trial completes. The chosen trial is always
    a complete one. Once offsets are learnt the slack narrows to ``slack_sd`` standard errors
    of the learnt overstatement (between a quarter of ``slack`` and ``slack``): the prediction
    is then trusted as far as the study has shown it to hold.

    With an ``energy_target`` (an energy reduction, D's validation energy ``direct_energy`` over
    a trial's, when short trials are taken on: :func:`take_on`) the sweep keeps only the
    weakest trial reaching the target at trial length and the nearest weaker one (the two an
    interpolation uses). Once a complete trial reaches it, a trial with a stronger lambda stops
    before its first step (it can never be chosen), and a trial weaker than the nearest weaker one stops at a check
    where its events exceed that trial's at the same check (it is on course to miss the target
    too, and is not the nearer of the two).
    """

    at: tuple[float, ...] = (0.1, 0.3)  # fractions of a trial's optimizer steps
    slack: float = 0.004
    events_tolerance: float | None = 0.01  # None: no trial stops for its events
    min_offset_trials: int = 3  # complete trials needed before offsets are used
    slack_sd: float | None = 2.0
    # the run's references, set once D is measured (SweepConfig.stop_rule)
    direct_accuracy: float = 0.0
    required: float = 0.0
    energy_target: float | None = None
    direct_energy: float = 0.0

    def steps(self, total: int) -> dict[int, float]:
        """The optimizer steps (of ``total``) after which the trial is checked, and their
        fractions; a check at the last step is dropped (the trial is measured there anyway)."""
        return {s: f for f in self.at if 0 < (s := max(1, round(f * total))) < total}

    def retention(self, accuracy: float) -> float:
        """Accuracy retention against D on the same validation samples."""
        return accuracy / self.direct_accuracy if self.direct_accuracy else 0.0

    def reason(
        self, check: dict[str, float], bar: Bar | None = None, rate_lambda: float | None = None
    ) -> str | None:
        """Why the trial at ``rate_lambda`` measured as ``check`` (``fraction``,
        ``val_accuracy``, ``events_per_sample``) stops, or None; ``bar`` from :meth:`bar` (None:
        no complete trial yet, nothing stops)."""
        if bar is None:
            return None
        if (stronger := self.outside_target(bar, rate_lambda)) is not None:
            return stronger
        fraction = check["fraction"]
        where = f"at {fraction:.0%} of its fine-tuning"
        predicted = self.retention(check["val_accuracy"]) - bar.offset(fraction, rate_lambda)
        slack = self.slack_at(fraction, bar)
        if predicted < bar.retention - slack:
            target = "required" if bar.feasible else "best trial's"
            return (
                f"retention {self.retention(check['val_accuracy']):.4f} {where} (final "
                f"predicted {predicted:.4f}) is more than {slack:.4g} under the {target} "
                f"{bar.retention:.4f}"
            )
        return self.events_reason(check, bar, rate_lambda)

    def events_reason(
        self, check: dict[str, float], bar: Bar, rate_lambda: float | None = None
    ) -> str | None:
        """Why a trial stops for its events at ``check`` (None: it runs on): more than the
        nearest trial under an energy target that misses it, for a weaker penalty still; or
        more than the best feasible trial's by over ``events_tolerance``."""
        fraction, events = check["fraction"], check["events_per_sample"]
        where = f"at {fraction:.0%} of its fine-tuning"
        weaker, lo = bar.weaker_events.get(fraction), bar.weaker_lambda
        busier = (
            weaker is not None
            and lo is not None
            and rate_lambda is not None
            and rate_lambda < lo
            and events > weaker
        )
        if busier:
            return (
                f"{events:.0f} events per sample {where} exceed the {weaker:.0f} of "
                f"λ = {lo:.4g} at the same check, which misses the energy "
                f"reduction target {self.energy_target:g} at trial length (this weaker penalty "
                "is on course to miss it too)"
            )
        reference = bar.events.get(fraction)
        if self.events_tolerance is None or reference is None:
            return None
        if events > reference * (1 + self.events_tolerance):
            return (
                f"{events:.0f} events per sample {where} exceed the best feasible trial's "
                f"{reference:.0f} (+{self.events_tolerance:.0%})"
            )
        return None

    def outside_target(self, bar: Bar | None, rate_lambda: float | None) -> str | None:
        """Why a trial at ``rate_lambda`` stops whatever it measures (None: it runs): a
        complete trial with a weaker penalty already reaches the energy target."""
        if bar is None or bar.reaching_lambda is None or rate_lambda is None:
            return None
        if rate_lambda <= bar.reaching_lambda:
            return None
        return (
            f"λ = {rate_lambda:.4g} is stronger than λ = {bar.reaching_lambda:.4g}, which "
            f"already reaches the energy reduction target {self.energy_target:g} at trial "
            "length: only the weakest trial reaching it can be taken on"
        )

    def slack_at(self, fraction: float, bar: Bar) -> float:
        """How far under the bar a prediction at ``fraction`` may fall: ``slack``, narrowed to
        ``slack_sd`` standard errors of the learnt overstatement once there is one, but never
        under a quarter of ``slack`` (three trials may agree by chance)."""
        spread = bar.spreads.get(fraction)
        if self.slack_sd is None or spread is None:
            return self.slack
        return min(self.slack, max(self.slack_sd * spread, self.slack / 4))

    def bar(self, trials: list[TrialRecord], checks: dict[int, list[Check]]) -> Bar | None:
        """The bar for the study's complete ``trials`` now, with each trial's ``checks`` by
        trial number (None while no trial is complete)."""
        if not trials:
            return None
        best, feasible = select_trial(trials, Choice(self.direct_accuracy, self.required))
        gaps: dict[float, list[tuple[float, float]]] = {}  # fraction -> (log lambda, gap)
        for t in trials:
            final = self.retention(t.val_accuracy)
            x = math.log(t.rate_lambda)
            for c in checks.get(t.number, []):
                gap = self.retention(c["val_accuracy"]) - final
                gaps.setdefault(c["fraction"], []).append((x, gap))
        offsets, spreads, slopes = {}, {}, {}
        for fraction, points in gaps.items():
            if len(points) < self.min_offset_trials:
                continue
            offset, spread, slope = overstatement(points)
            offsets[fraction], spreads[fraction] = offset, spread
            if slope is not None:
                slopes[fraction] = slope
        events = (
            {c["fraction"]: c["events_per_sample"] for c in checks.get(best.number, [])}
            if feasible
            else {}
        )
        bar = self.required if feasible else self.retention(best.val_accuracy)
        target: dict[str, Any] = {}
        if reaching := reaching_target(trials, self.direct_energy, self.energy_target):
            hi = reaching[0].rate_lambda
            target["reaching_lambda"] = hi
            weaker = [t for t in trials if t.rate_lambda < hi and t.energy_nJ > 0]
            if weaker:
                lo = max(weaker, key=lambda t: t.rate_lambda)
                target["weaker_lambda"] = lo.rate_lambda
                target["weaker_events"] = {
                    c["fraction"]: c["events_per_sample"] for c in checks.get(lo.number, [])
                }
        return Bar(bar, feasible, events, offsets, spreads, slopes, **target)


def overstatement(
    points: list[tuple[float, float]],
) -> tuple[float, float, tuple[float, float] | None]:
    """How much early checks overstate the final retention, from the complete trials' ``(log
    lambda, overstatement)``: the mean, the standard error of predicting one more trial, and
    from four trials on a line in log lambda (its slope, kept >= 0, and centre; None before).
    The overstatement grows with lambda, so one mean is too small for strong penalties and too
    large for weak ones. The error is the
    residual standard deviation times sqrt(1 + 1/n) (the leverage of the trial's own lambda
    left out)."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    n, mean = len(points), statistics.fmean(ys)
    centre = statistics.fmean(xs)
    sxx = sum((x - centre) ** 2 for x in xs)
    if n < 4 or sxx <= 0:
        return mean, statistics.stdev(ys) * math.sqrt(1 + 1 / n), None
    # a stronger penalty keeps lowering accuracy for longer: the line never falls with lambda
    slope = max(0.0, sum((x - centre) * (y - mean) for x, y in zip(xs, ys)) / sxx)
    residuals = [y - mean - slope * (x - centre) for x, y in zip(xs, ys)]
    sd = math.sqrt(sum(r * r for r in residuals) / (n - 2))
    return mean, sd * math.sqrt(1 + 1 / n), (slope, centre)


class Judge:
    """One trial's early-stop checks: ``evaluate`` measures E at :meth:`steps` and calls the
    judge with the fraction and the measurement; it records the check and raises
    :class:`TrialStopped` when the rule says so."""

    def __init__(
        self,
        rule: EarlyStop,
        bar: Callable[[], Bar | None],
        on_check: Callable[[dict[str, float]], None] | None = None,
        rate_lambda: float | None = None,
    ) -> None:
        self.rule, self._bar, self._on_check = rule, bar, on_check
        self.rate_lambda = rate_lambda
        self.checks: list[dict[str, float]] = []

    def steps(self, total: int) -> dict[int, float]:
        """Optimizer step -> fraction of the trial's checks."""
        return self.rule.steps(total)

    def start(self) -> None:
        """Before the trial's first step: raise :class:`TrialStopped` when its lambda alone
        rules it out (:meth:`EarlyStop.outside_target`), so it costs no fine-tuning."""
        reason = self.rule.outside_target(self._bar(), self.rate_lambda)
        if reason is not None:
            raise TrialStopped(reason)

    def __call__(self, fraction: float, step: int, measured: dict[str, float]) -> None:
        check = {
            "fraction": fraction,
            "step": float(step),
            "val_accuracy": float(measured["val_accuracy"]),
            "events_per_sample": float(measured["events_per_sample"]),
        }
        check["accuracy_retention"] = self.rule.retention(check["val_accuracy"])
        self.checks.append(check)
        if self._on_check is not None:
            self._on_check(check)
        reason = self.rule.reason(check, self._bar(), self.rate_lambda)
        if reason is not None:
            raise TrialStopped(reason)
