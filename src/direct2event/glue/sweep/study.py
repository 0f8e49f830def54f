"""Running a study: trials added by one or several workers (processes, machines) until it
holds ``n_trials`` finished ones, resumed where it stopped; and the study's trials read back as
records for the choice (:mod:`direct2event.glue.sweep.policy`)."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

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
from direct2event.glue.sweep.storage import open_storage
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
    names = storage.get_study_system_attrs(study_id).get("study:metric_names")
    if names is not None and tuple(names) != OBJECTIVES:
        raise TuningError(
            f"Study '{name}' in {url} measures {list(names)}, not {list(OBJECTIVES)} (its energy "
            "is in another unit): set tuning.study_name to a new name."
        )
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
        energy_nJ=float(trial.values[1]),
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


def open_study(config: StudyConfig) -> optuna.Study:
    """The study ``config`` names, created when new (its objectives named, its first lambdas
    queued) and described by ``config.user_attrs`` for optuna-dashboard."""
    storage = open_storage(
        config.storage,
        config.heartbeat_interval_s,
        config.grace_period_s,
        on_stale=requeue_stale_trial,
    )
    study = optuna.create_study(
        study_name=config.name,
        storage=storage,
        directions=[d.name.lower() for d in DIRECTIONS],
        load_if_exists=True,
        # reseeded by the study's size so a resumed run or a second worker draws new values
        sampler=optuna.samplers.TPESampler(
            seed=config.seed + len(study_trials(storage, config.name))
        ),
    )
    if study.metric_names != list(OBJECTIVES):
        with warnings.catch_warnings():  # experimental in Optuna 5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(OBJECTIVES))
    for key, value in config.user_attrs.items():
        if study.user_attrs.get(key) != value:
            study.set_user_attr(key, value)
    if not study.get_trials(deepcopy=False):
        for lam in config.first_lambdas:
            study.enqueue_trial({PARAM: float(lam)}, skip_if_exists=True)
    return study


class Objective:
    """One trial of the study: refuse it when the study needs no more, draw lambda, run
    ``evaluate`` under its tracking and early-stop judge, and keep what it measured as the
    trial's attributes (a stopped trial is PRUNED with its reason and checks)."""

    def __init__(
        self,
        study: optuna.Study,
        config: StudyConfig,
        evaluate: Evaluate,
        trial_run: TrialRun | None,
        early_stop: EarlyStop | None,
    ) -> None:
        self.study, self.config, self.evaluate = study, config, evaluate
        self.trial_run, self.early_stop = trial_run, early_stop

    def __call__(self, trial: optuna.Trial) -> tuple[float, float]:
        self.refuse_surplus(trial)
        pause_point("trial:started")  # test-only: owned and beating, before its lambda
        c = self.config
        lam = trial.suggest_float(PARAM, c.lambda_min, c.lambda_max, log=True)
        started = time.perf_counter()
        run = self.trial_run(trial.number, lam) if self.trial_run else nullcontext(TrialTracker())
        judge = None
        try:
            with run as tracker:
                judge = self.judge(lam, tracker)
                pause_point("trial:objective")
                result = self.evaluate(lam, tracker.on_epoch, judge)
                tracker.finish(result, time.perf_counter() - started)
        except Terminated as err:  # Optuna marks it FAIL; the next worker runs its lambda again
            trial.set_user_attr("fail_reason", str(err))
            raise
        except TrialStopped as err:
            self.keep(trial, {"stopped_reason": str(err)}, judge, started)
            logger.info("Trial %d (λ = %.4g) stopped early: %s", trial.number, lam, err)
            raise optuna.TrialPruned(str(err)) from None
        self.keep(trial, {k: float(v) for k, v in result.items()}, judge, started)
        pause_point("trial:before_tell")  # measured, not yet told
        return float(result["val_accuracy"]), float(result["energy_nJ"])

    def refuse_surplus(self, trial: optuna.Trial) -> None:
        """Counted before any work: finished trials, and running ones that started earlier."""
        ahead = [
            t
            for t in self.study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
            if t.state in FINISHED or t.number < trial.number
        ]
        if len(ahead) >= self.config.n_trials:
            trial.set_user_attr("fail_reason", "surplus: n_trials complete or running elsewhere")
            raise SurplusTrial(f"trial {trial.number}: the study needs no more trials")

    def judge(self, lam: float, tracker: TrialTracker) -> Judge | None:
        """The trial's early-stop judge (None without a rule); a lambda the rule rules out
        stops here, before any fine-tuning."""
        rule = self.early_stop
        if rule is None:
            return None
        judge = Judge(
            rule,
            lambda: rule.bar(*measured_trials(self.study.get_trials(deepcopy=False))),
            tracker.check,
            lam,
        )
        judge.start()
        return judge

    @staticmethod
    def keep(
        trial: optuna.Trial, attrs: dict[str, Any], judge: Judge | None, started: float
    ) -> None:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        trial.set_user_attr("checks", judge.checks if judge else [])
        trial.set_user_attr("trial_seconds", time.perf_counter() - started)


def run_study(
    config: StudyConfig,
    evaluate: Evaluate,
    trial_run: TrialRun | None = None,
    early_stop: EarlyStop | None = None,
) -> optuna.Study:
    """Add trials until the study ``config`` describes holds ``n_trials`` finished ones, complete
    or stopped early (or ``timeout_s`` passes).

    ``evaluate(lambda, on_epoch, judge)`` fine-tunes and measures network E and returns at
    least ``val_accuracy`` and ``energy_nJ``; everything it returns is kept as trial attributes.
    With ``early_stop``, ``judge`` checks the trial during its fine-tuning; a trial it stops is
    recorded as PRUNED (with ``stopped_reason`` and its ``checks``) and counts toward
    ``n_trials``. ``trial_run`` tracks each trial while it runs (see
    :func:`direct2event.glue.sweep.tracking.mlflow_trial_run`).

    Several workers (processes, machines) may run this on one study at once; together they
    leave exactly ``n_trials`` finished trials. A worker starts a trial only while fewer than
    ``n_trials`` are finished or running; when the last ones run elsewhere it waits, saying
    for what, until they finish or one has been silent for the grace period (its worker died:
    it is failed and its lambda runs again here).
    """
    study = open_study(config)
    objective = Objective(study, config, evaluate, trial_run, early_stop)
    deadline = None if config.timeout_s is None else time.monotonic() + config.timeout_s
    watch = TrialWatch(config.grace_period_s, poll_s=min(config.heartbeat_interval_s, POLL_S))
    while deadline is None or time.monotonic() < deadline:
        complete, running = settle(study, watch)
        if complete >= config.n_trials:
            logger.info(
                "Study %s holds %d finished trials (n_trials %d)",
                config.name,
                complete,
                config.n_trials,
            )
            break
        if complete + len(running) >= config.n_trials:
            watch.report_wait(config.name, complete, running)
            time.sleep(watch.poll_s)
            continue
        watch.waiting_since = None
        if running:  # other workers share the sampler's seed: draw apart from them
            study.sampler.reseed_rng()
        run_one(study, objective, config.grace_period_s)
    return study


def settle(study: optuna.Study, watch: TrialWatch) -> tuple[int, list[FrozenTrial]]:
    """Fail the trials of dead workers (this host's at once, others' once silent for the grace
    period) and queue their lambdas again; the finished count and the running trials."""
    fail_dead_local_trials(study)
    with warnings.catch_warnings():  # experimental in Optuna 5
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # heartbeat too old -> FAIL, queued again
    watch.fail_silent_trials(study, study.get_trials(deepcopy=False))
    requeue_interrupted_trials(study)
    trials = study.get_trials(deepcopy=False)
    running = [t for t in trials if t.state == TrialState.RUNNING]
    return sum(t.state in FINISHED for t in trials), running


def run_one(study: optuna.Study, objective: Objective, grace_period_s: int) -> None:
    """One trial of this worker. Another worker may have failed it as stale meanwhile (no
    heartbeat for the grace period: an overloaded machine); its result is then dropped."""
    try:
        study.optimize(objective, n_trials=1, catch=(SurplusTrial,), gc_after_trial=True)
    except (ValueError, RuntimeError) as err:
        if "Cannot tell a" not in str(err) and "has already finished" not in str(err):
            raise
        logger.warning(
            "A trial of this worker was failed by another worker while it ran (heartbeat older "
            "than %d s; raise tuning.grace_period_s on a loaded machine); its result is dropped "
            "and the sweep goes on: %s",
            grace_period_s,
            err,
        )
