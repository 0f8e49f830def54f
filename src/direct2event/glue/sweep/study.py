"""Running a study: trials added by one or several workers (processes, machines) until it
holds ``n_trials`` finished ones, resumed where it stopped; and the study's trials read back as
records for the choice (:mod:`direct2event.glue.sweep.policy`)."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import optuna
from optuna.distributions import FloatDistribution
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from direct2event.glue.reports import StoppedRecord, TrialRecord
from direct2event.glue.runs import Terminated, pause_point
from direct2event.glue.sweep.config import OBJECTIVES, PARAM, StudyConfig
from direct2event.glue.sweep.early_stop import Check, EarlyStop, Judge, TrialStopped
from direct2event.glue.sweep.policy import TuningError
from direct2event.glue.sweep.recovery import (
    POLL_S,
    TrialWatch,
    fail_dead_local_trials,
    requeue_interrupted_trials,
    requeue_stale_trial,
)
from direct2event.glue.sweep.storage import lambda_distribution, open_storage
from direct2event.snn.training import Callback

logger = logging.getLogger(__name__)

DIRECTIONS = (StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)  # what counts toward n_trials


def check_study(url: str, name: str, space: FloatDistribution) -> int:
    """Open the storage and, when the study exists, check its space and objectives.

    Returns the number of finished (complete or early-stopped) trials the study already holds
    (0 for a new study).
    """
    storage = open_storage(url)
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return 0
    directions = tuple(storage.get_study_directions(study_id))
    if directions != DIRECTIONS:
        raise TuningError(
            f"Study '{name}' in {url} optimises {[d.name for d in directions]}, not "
            f"{[d.name for d in DIRECTIONS]} (validation accuracy, energy). Set tuning.study_name "
            "to a new name."
        )
    complete = 0
    for trial in storage.get_all_trials(study_id, deepcopy=False):
        stored = dict(trial.distributions)
        if stored and stored != {PARAM: space}:
            raise TuningError(
                f"Study '{name}' in {url} was run over {stored}, but the configuration asks for "
                f"{{'{PARAM}': {space}}} (tuning.lambda_min / lambda_max). Restore the range, or "
                "set tuning.study_name to a new name to start another study."
            )
        complete += trial.state in FINISHED
    return complete


def study_trials(storage: optuna.storages.BaseStorage, name: str) -> list[FrozenTrial]:
    """All trials of a stored study (none when it does not exist yet)."""
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return []
    return storage.get_all_trials(study_id, deepcopy=False)


def trial_record(trial: FrozenTrial, numbered: bool = True) -> TrialRecord:
    """A complete trial's lambda, validation accuracy and energy (and its number)."""
    return TrialRecord(
        rate_lambda=float(trial.params[PARAM]),
        val_accuracy=float(trial.values[0]),
        energy_uJ=float(trial.values[1]),
        number=trial.number if numbered else None,
    )


def complete_records(trials: list[FrozenTrial]) -> list[TrialRecord]:
    """The complete trials as records, in trial order."""
    return [trial_record(t) for t in trials if t.state == TrialState.COMPLETE and t.values]


def measured_trials(trials: list[FrozenTrial]) -> tuple[list[TrialRecord], dict[int, list[Check]]]:
    """The complete trials as records, and each one's early-stop checks by trial number: what
    :meth:`EarlyStop.bar` reads."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values]
    checks = {t.number: list(t.user_attrs.get("checks", [])) for t in complete}
    return [trial_record(t) for t in complete], checks


def stopped_record(trial: FrozenTrial) -> StoppedRecord:
    """A pruned trial as reported: its last check says where it stopped."""
    checks = trial.user_attrs.get("checks") or [{}]
    return StoppedRecord(
        number=trial.number,
        rate_lambda=float(trial.params[PARAM]),
        fraction=float(checks[-1].get("fraction", 0.0)),
        reason=str(trial.user_attrs.get("stopped_reason", "")),
        seconds=trial.user_attrs.get("trial_seconds"),
    )


Evaluate = Callable[[float, Callback | None, Judge | None], dict[str, float]]
# A trial's tracking: entered when the trial starts (number, lambda), it yields the callback for
# the trial's epochs; it receives the trial's results before it exits.
TrialRun = Callable[[int, float], AbstractContextManager["TrialTracker"]]


class TrialTracker:
    """What a trial's tracking context hands the objective: a training callback that logs its
    epochs and a sink for the trial's results (none and no-ops when nothing tracks)."""

    def __init__(self, on_epoch: Callback | None = None) -> None:
        self.on_epoch = on_epoch

    def finish(self, results: dict[str, float], seconds: float) -> None:
        """Record the trial's results (nothing to do without tracking)."""

    def check(self, check: dict[str, float]) -> None:
        """Record one early-stop check (nothing to do without tracking)."""


class SurplusTrial(Exception):
    """A trial started while the study already held ``n_trials`` complete or running ones
    (several workers asked at once); it fails before any work and leaves no MLflow run."""


def run_study(
    config: StudyConfig,
    evaluate: Evaluate,
    trial_run: TrialRun | None = None,
    early_stop: EarlyStop | None = None,
) -> optuna.Study:
    """Add trials until the study ``config`` describes holds ``n_trials`` finished ones, complete
    or stopped early (or ``timeout_s`` passes).

    ``evaluate(lambda, on_epoch, judge)`` fine-tunes and measures network E and returns at
    least ``val_accuracy`` and ``energy_uJ``; everything it returns is kept as trial attributes,
    with the worker's host and pid. With ``early_stop``, ``judge`` checks the trial during its
    fine-tuning; a trial it stops is recorded as PRUNED (with ``stopped_reason`` and its
    ``checks``) and counts toward ``n_trials``. ``trial_run`` tracks each trial while it runs (see
    :func:`mlflow_trial_run`). ``first`` lambdas are queued when the study is new, so a short
    default sweep measures informative values. The objectives are named (``val_accuracy``,
    ``energy_uJ``) and ``user_attrs`` describe the study's setup, for optuna-dashboard.

    Several workers (processes, machines) may run this on one study at once; together they
    leave exactly ``n_trials`` complete trials. A worker starts a trial only while fewer than
    ``n_trials`` are complete or running; when the last ones run elsewhere it waits (polling
    every 2 s) until they complete, or until the heartbeat fails a trial
    whose worker died (after ``grace_period_s``) and it runs a trial in its place.
    """
    c, name, n_trials = config, config.name, config.n_trials
    space = lambda_distribution(c.lambda_min, c.lambda_max)
    storage = open_storage(
        c.storage, c.heartbeat_interval_s, c.grace_period_s, on_stale=requeue_stale_trial
    )
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        directions=[d.name.lower() for d in DIRECTIONS],
        load_if_exists=True,
        # reseeded by the study's size so a resumed run or a second worker draws new values
        sampler=optuna.samplers.TPESampler(seed=c.seed + len(study_trials(storage, name))),
    )
    if study.metric_names != list(OBJECTIVES):
        with warnings.catch_warnings():  # experimental in Optuna 5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(OBJECTIVES))
    for key, value in c.user_attrs.items():
        if study.user_attrs.get(key) != value:
            study.set_user_attr(key, value)
    if not study.get_trials(deepcopy=False):
        for lam in c.first_lambdas:
            study.enqueue_trial({PARAM: float(lam)}, skip_if_exists=True)

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        # counted before any work: finished trials, and running ones that started earlier
        ahead = [
            t
            for t in study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
            if t.state in FINISHED or t.number < trial.number
        ]
        if len(ahead) >= n_trials:
            trial.set_user_attr("fail_reason", "surplus: n_trials complete or running elsewhere")
            raise SurplusTrial(f"trial {trial.number}: the study needs no more trials")
        pause_point("trial:started")  # test-only: owned and beating, before its lambda
        lam = trial.suggest_float(PARAM, space.low, space.high, log=True)
        started = time.perf_counter()
        tracking = trial_run(trial.number, lam) if trial_run else nullcontext(TrialTracker())
        judge = None
        try:
            with tracking as tracker:
                if early_stop is not None:
                    judge = Judge(
                        early_stop,
                        lambda: early_stop.bar(*measured_trials(study.get_trials(deepcopy=False))),
                        tracker.check,
                        lam,
                    )
                    judge.start()
                pause_point("trial:objective")
                result = evaluate(lam, tracker.on_epoch, judge)
                tracker.finish(result, time.perf_counter() - started)
        except Terminated as err:  # Optuna marks it FAIL; the next worker runs its lambda again
            trial.set_user_attr("fail_reason", str(err))
            raise
        except TrialStopped as err:
            trial.set_user_attr("stopped_reason", str(err))
            trial.set_user_attr("checks", judge.checks if judge else [])
            trial.set_user_attr("trial_seconds", time.perf_counter() - started)
            logger.info("Trial %d (λ = %.4g) stopped early: %s", trial.number, lam, err)
            raise optuna.TrialPruned(str(err)) from None
        for key, value in result.items():
            trial.set_user_attr(key, float(value))
        trial.set_user_attr("checks", judge.checks if judge else [])
        trial.set_user_attr("trial_seconds", time.perf_counter() - started)
        pause_point("trial:before_tell")  # measured, not yet told
        return float(result["val_accuracy"]), float(result["energy_uJ"])

    deadline = None if c.timeout_s is None else time.monotonic() + c.timeout_s
    watch = TrialWatch(c.grace_period_s, poll_s=min(c.heartbeat_interval_s, POLL_S))
    while deadline is None or time.monotonic() < deadline:
        fail_dead_local_trials(study)  # this host's dead workers: at once, not after the grace
        with warnings.catch_warnings():  # experimental in Optuna 5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # heartbeat too old -> FAIL, queued again
        trials = study.get_trials(deepcopy=False)
        watch.fail_silent_trials(study, trials)  # no sign of life for the grace period
        requeue_interrupted_trials(study)  # a stopped trial's lambda is measured again
        trials = study.get_trials(deepcopy=False)
        complete = sum(t.state in FINISHED for t in trials)
        running = [t for t in trials if t.state == TrialState.RUNNING]
        if complete >= n_trials:
            logger.info("Study %s holds %d finished trials (n_trials %d)", name, complete, n_trials)
            break
        if complete + len(running) >= n_trials:
            watch.report_wait(name, complete, running)
            time.sleep(watch.poll_s)
            continue
        watch.waiting_since = None
        if running:  # other workers share the sampler's seed: draw apart from them
            study.sampler.reseed_rng()
        try:
            study.optimize(objective, n_trials=1, catch=(SurplusTrial,), gc_after_trial=True)
        except (ValueError, RuntimeError) as err:
            # another worker failed this worker's trial as stale (no heartbeat for
            # grace_period_s: an overloaded machine); its result cannot be told any more
            if "Cannot tell a" not in str(err) and "has already finished" not in str(err):
                raise
            logger.warning(
                "A trial of this worker was failed by another worker while it ran (heartbeat "
                "older than %d s; raise tuning.grace_period_s on a loaded machine); its result "
                "is dropped and the sweep goes on: %s",
                c.grace_period_s,
                err,
            )
    return study
