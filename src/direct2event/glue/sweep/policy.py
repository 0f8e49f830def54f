"""Which lambda the sweep chooses: pure functions on the study's complete trials, given as
:class:`direct2event.glue.reports.TrialRecord` (no Optuna, MLflow or network in here).

- :func:`select_trial`: whole trials; the lowest energy over the floor, or the most accurate
  trial reaching an energy target.
- :func:`take_on`: short trials; which ones go on to the full fine-tuning, in
  :func:`completion_order`, or the :func:`interpolated_lambda` between two trials that bracket
  an energy target.
- :func:`pareto_front`: the trials no other beats on accuracy and energy.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from direct2event.glue.reports import TrialRecord

logger = logging.getLogger(__name__)

Payload = TypeVar("Payload")  # what a completion trains (a network and its history)


class TuningError(ValueError):
    """A storage that cannot be opened, a stored study that does not fit the configuration, or
    a study with nothing to choose from."""


@dataclass(frozen=True)
class Choice:
    """The choice rule's settings: D's validation accuracy and energy on the trials' samples,
    the retention a chosen trial must reach (``required``: floor + margin), the retention a
    short trial must reach to be taken on (``candidate_at``), and the energy target."""

    direct_accuracy: float
    required: float
    candidate_at: float | None = None  # default: required
    completions: int = 1
    validation_size: int = 1
    tie_standard_errors: float = 0.0
    direct_energy: float = 0.0
    energy_target: float | None = None

    def feasible(self, accuracy: float) -> bool:
        """Whether a validation accuracy keeps the required retention of D's."""
        return accuracy >= self.required * self.direct_accuracy


def _key_most_accurate(t: TrialRecord) -> tuple[float, float, int]:
    return (t.val_accuracy, -t.energy_nJ, -(t.number or 0))


def reaching_target(
    trials: list[TrialRecord], direct_energy: float, target: float | None
) -> list[TrialRecord]:
    """The trials whose energy reduction on validation (D's energy over the trial's) reaches
    ``target``, weakest penalty (smallest lambda) first; none without a target."""
    if target is None or direct_energy <= 0:
        return []
    reaching = [t for t in trials if t.energy_nJ > 0 and direct_energy / t.energy_nJ >= target]
    return sorted(reaching, key=lambda t: (t.rate_lambda, t.energy_nJ, t.number or 0))


def interpolated_lambda(
    trials: list[TrialRecord], direct_energy: float, target: float | None
) -> float | None:
    """The lambda at which the energy reduction meets ``target`` at trial length, on the line in
    (log lambda, log reduction) between the weakest trial reaching it and the nearest weaker
    trial that does not; None when no trial on either side brackets it. The reduction grows
    smoothly with lambda and a short trial measures it well, so a lambda between two trials
    keeps more accuracy than the stronger one without missing the target."""
    reaching = reaching_target(trials, direct_energy, target)
    if not reaching or target is None:
        return None
    hi = reaching[0]
    weaker = [t for t in trials if t.rate_lambda < hi.rate_lambda and t.energy_nJ > 0]
    if not weaker:
        return None
    lo = max(weaker, key=lambda t: t.rate_lambda)
    r_lo, r_hi = math.log(direct_energy / lo.energy_nJ), math.log(direct_energy / hi.energy_nJ)
    if r_hi <= r_lo:  # not increasing between them: no line to follow
        return None
    x_lo, x_hi = math.log(lo.rate_lambda), math.log(hi.rate_lambda)
    return math.exp(x_lo + (math.log(target) - r_lo) / (r_hi - r_lo) * (x_hi - x_lo))


def select_trial(trials: list[TrialRecord], choice: Choice) -> tuple[TrialRecord, bool]:
    """The chosen trial: the lowest energy among those whose validation accuracy retention
    (E / D) reaches ``choice.required``; when none does, the most accurate trial. With an
    energy target, the most accurate of the trials reaching it instead, when any does. Also
    returns whether the required retention was met."""
    if not trials:
        raise TuningError("The study has no complete trial to choose lambda from.")
    if reaching := reaching_target(trials, choice.direct_energy, choice.energy_target):
        best = max(reaching, key=_key_most_accurate)
        return best, choice.feasible(best.val_accuracy)
    passing = [t for t in trials if choice.feasible(t.val_accuracy)]
    if passing:
        return min(passing, key=lambda t: (t.energy_nJ, -t.val_accuracy, t.number or 0)), True
    return max(trials, key=_key_most_accurate), False


def accuracy_ties(
    trials: list[TrialRecord], validation_size: int, standard_errors: float
) -> list[TrialRecord]:
    """The trials whose accuracy lies within ``standard_errors`` binomial standard errors
    (``sqrt(p (1 - p) / n)`` of the most accurate one's accuracy ``p`` on ``validation_size``
    samples) of the most accurate: accuracies that close cannot rank their lambdas, so energy
    decides among them (the one-standard-error rule of Breiman et al., 1984, with the cheaper
    network as the simpler model). Lowest energy first; the most accurate alone at 0."""
    if not trials:
        return []
    p = max(trials, key=_key_most_accurate).val_accuracy
    tolerance = standard_errors * math.sqrt(max(p * (1 - p), 0.0) / max(validation_size, 1))
    ties = [t for t in trials if t.val_accuracy >= p - tolerance]
    return sorted(ties, key=lambda t: (t.energy_nJ, -t.val_accuracy, t.number or 0))


def completion_order(trials: list[TrialRecord], choice: Choice) -> list[TrialRecord]:
    """Trials in the order they are taken on to the full fine-tuning when trials run only its
    first epochs: those whose retention reaches ``choice.candidate_at`` at trial length, lowest
    energy first; when none does, the :func:`accuracy_ties` of the most accurate, lowest energy
    first (the most accurate alone with ``tie_standard_errors`` 0).

    With an energy target, the trials whose energy reduction reaches it at trial length come
    first instead, weakest penalty first: a short trial measures its events well but not its
    accuracy, a weaker penalty keeps more accuracy, and the rest of the fine-tuning only lowers
    the events further."""
    if reaching := reaching_target(trials, choice.direct_energy, choice.energy_target):
        logger.info(
            "λ = %s reach an energy reduction of %g at trial length: the weakest goes on first",
            ", ".join(f"{t.rate_lambda:.4g}" for t in reaching),
            choice.energy_target,
        )
        return reaching
    if choice.energy_target is not None:
        logger.warning(
            "No trial reaches an energy reduction of %g at trial length (D: %.4g nJ); taken on "
            "by retention instead",
            choice.energy_target,
            choice.direct_energy,
        )
    shortlist = choice.required if choice.candidate_at is None else choice.candidate_at
    passing = [t for t in trials if t.val_accuracy >= shortlist * choice.direct_accuracy]
    if passing:
        return sorted(passing, key=lambda t: (t.energy_nJ, -t.val_accuracy, t.number or 0))
    ties = accuracy_ties(trials, choice.validation_size, choice.tie_standard_errors)
    if len(ties) > 1:
        logger.info(
            "No trial reaches retention %.4f at trial length; λ = %s tie within %g standard "
            "errors of the most accurate (n = %d): the lowest-energy tie goes on first",
            shortlist,
            ", ".join(f"{t.rate_lambda:.4g}" for t in ties),
            choice.tie_standard_errors,
            choice.validation_size,
        )
    return ties


Complete = Callable[[float], tuple[dict[str, float], Any]]  # lambda -> (measured, payload)


@dataclass(frozen=True)
class TakenOn:
    """What :func:`take_on` decided: the chosen completion, whether it reaches the required
    retention, every completion's record, and the chosen one's payload (its network)."""

    chosen: TrialRecord
    feasible: bool
    completed: list[TrialRecord]
    payload: Any


def take_on(trials: list[TrialRecord], choice: Choice, complete: Complete) -> TakenOn:
    """Trials that ran the first epochs of the fine-tuning taken on to its end by
    ``complete(lambda)``, in :func:`completion_order`, until one reaches ``choice.required`` on
    validation after the whole fine-tuning or ``choice.completions`` are done.

    After a completion falls short, the next one must have a weaker penalty (lambda below it:
    a stronger penalty keeps less accuracy) and a trial-length accuracy that reaches the
    requirement once it changes as the short one's did from trial length to the end; when no
    candidate is left that way, the most accurate trial with a weaker penalty is the best
    chance. The chosen completion is the feasible one with the lowest energy, else the most
    accurate. When two trials bracket an energy target, the :func:`interpolated_lambda` between
    them is the one completion instead (no trial number)."""
    lam = interpolated_lambda(trials, choice.direct_energy, choice.energy_target)
    if lam is not None:  # between two trials: one whole fine-tuning at that lambda
        logger.info(
            "λ = %.4g meets the energy reduction target %g: taken on", lam, choice.energy_target
        )
        res, payload = complete(lam)
        record = TrialRecord(
            rate_lambda=lam, val_accuracy=res["val_accuracy"], energy_nJ=res["energy_nJ"]
        )
        return TakenOn(record, choice.feasible(res["val_accuracy"]), [record], payload)
    done: list[TrialRecord] = []
    payloads: dict[float, Any] = {}
    short_at = math.inf  # the smallest lambda that fell short of the requirement
    needed = -math.inf  # trial-length accuracy a candidate needs after a shortfall
    order = completion_order(trials, choice)
    while len(done) < choice.completions:
        trial = _next_candidate(trials, order, done, short_at, needed)
        if trial is None:
            break
        res, payloads[trial.rate_lambda] = complete(trial.rate_lambda)
        done.append(
            TrialRecord(
                rate_lambda=trial.rate_lambda,
                val_accuracy=res["val_accuracy"],
                energy_nJ=res["energy_nJ"],
                number=trial.number,
            )
        )
        _log_completion(trial, res, choice)
        if choice.feasible(res["val_accuracy"]):
            break
        short_at = trial.rate_lambda
        needed = max(
            needed,
            trial.val_accuracy + choice.required * choice.direct_accuracy - res["val_accuracy"],
        )
    passing = [r for r in done if choice.feasible(r.val_accuracy)]
    if passing:
        chosen = min(passing, key=lambda r: (r.energy_nJ, -r.val_accuracy))
    else:
        chosen = max(done, key=lambda r: (r.val_accuracy, -r.energy_nJ))
    return TakenOn(chosen, bool(passing), done, payloads[chosen.rate_lambda])


def _next_candidate(
    trials: list[TrialRecord],
    order: list[TrialRecord],
    done: list[TrialRecord],
    short_at: float,
    needed: float,
) -> TrialRecord | None:
    """The next trial to take on: first in ``order`` among those weaker than ``short_at``,
    not yet taken, with a trial-length accuracy of at least ``needed``; after a shortfall with
    none such, the most accurate weaker trial (the best chance)."""
    taken = {r.number for r in done}
    left = [t for t in trials if t.rate_lambda < short_at and t.number not in taken]
    ok = {t.number for t in left if t.val_accuracy >= needed}
    trial = next((t for t in order if t.number in ok), None)
    if trial is None and done and left:
        trial = max(left, key=_key_most_accurate)
    return trial


def _log_completion(trial: TrialRecord, res: dict[str, float], choice: Choice) -> None:
    logger.info(
        "Trial %d (λ = %.4g) taken on to the full fine-tuning: val accuracy %.4f "
        "(retention %.4f, %s %.4f), %.0f events/sample",
        trial.number,
        trial.rate_lambda,
        res["val_accuracy"],
        res["accuracy_retention"],
        "reaches" if res["accuracy_retention"] >= choice.required else "under",
        choice.required,
        res["events_per_sample"],
    )


def non_dominated(scores: dict[Any, tuple[float, float]]) -> set[Any]:
    """Keys whose ``(accuracy, energy)`` no other entry beats on both (ties are kept)."""
    return {
        key
        for key, (acc, energy) in scores.items()
        if not any(a >= acc and e <= energy and (a, e) != (acc, energy) for a, e in scores.values())
    }


def pareto_front(trials: list[TrialRecord]) -> list[TrialRecord]:
    """The trials no other trial beats on both objectives, by increasing energy."""
    by_number = {t.number: t for t in trials}
    front = non_dominated({n: (t.val_accuracy, t.energy_nJ) for n, t in by_number.items()})
    return sorted((by_number[n] for n in front), key=lambda t: t.energy_nJ)
