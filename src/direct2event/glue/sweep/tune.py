"""One sweep from start to decision: run the study (this worker's share of its trials), choose
lambda from its trials, take short trials on to the full fine-tuning, and report."""

from __future__ import annotations

import logging
from typing import Any, NamedTuple, Protocol

from optuna.trial import TrialState

from direct2event.glue.reports import TrialRecord, TuningReport
from direct2event.glue.sweep.config import SweepConfig
from direct2event.glue.sweep.early_stop import Judge
from direct2event.glue.sweep.policy import TakenOn, pareto_front, select_trial, take_on
from direct2event.glue.sweep.study import complete_records, run_study, stopped_record
from direct2event.glue.sweep.tracking import mark_chosen, mlflow_trial_run
from direct2event.snn.training import Callback

logger = logging.getLogger(__name__)


class TrialRunner(Protocol):
    """What the sweep needs of a trial: run one at a lambda, take one on to the full
    fine-tuning, hand back a trial this run trained, and D measured on the same samples."""

    direct_accuracy: float
    direct_energy: float
    validation_size: int

    def evaluate(
        self, lam: float, on_epoch: Callback | None = None, judge: Judge | None = None
    ) -> dict[str, float]: ...

    def complete(self, lam: float) -> tuple[dict[str, float], Any]: ...

    def kept(self, lam: float) -> Any | None: ...


class SweepOutcome(NamedTuple):
    """The report, its MLflow metrics, and the chosen network when this run trained it."""

    report: TuningReport
    metrics: dict[str, dict[str, float]]
    chosen: Any | None


def configured(rate_lambda: float, **where: Any) -> TuningReport:
    """The report when no trial chose lambda: the configured one is used."""
    return TuningReport(rate_lambda=rate_lambda, **where)


def tune(
    config: SweepConfig,
    runner: TrialRunner,
    configured_lambda: float,
    lambda0: TrialRecord | None = None,
    epoch_offset: int = 0,
) -> SweepOutcome:
    """Run the study, choose lambda (whole trials: :func:`select_trial`; short ones:
    :func:`take_on`), name the chosen trial in the study and MLflow, and report. ``lambda0``:
    E at lambda = 0 measured like a trial, reported beside the trials (not a candidate);
    ``epoch_offset``: epochs E trained before the trials (a warm-up)."""
    name = config.study.name
    rule = config.stop_rule(runner.direct_accuracy, runner.direct_energy, runner.validation_size)
    run = mlflow_trial_run(config.dataset, name, offset=epoch_offset)
    trials = run_study(config.study, runner.evaluate, run, rule).get_trials(deepcopy=False)
    complete = complete_records(trials)
    stopped = [stopped_record(t) for t in trials if t.state == TrialState.PRUNED]
    where = {"enabled": True, "study_name": name, "storage": config.shown_storage}
    if not complete:
        logger.warning("No complete trial in study %s: λ from the configuration", name)
        return SweepOutcome(configured(configured_lambda, **where, stopped=stopped), {}, None)
    choice = config.policy(runner.direct_accuracy, runner.direct_energy, runner.validation_size)
    if config.short:  # trials ran the first epochs: the chosen ones go on to the end
        taken = take_on(complete, choice, runner.complete)
    else:  # every trial ran the whole fine-tuning: the chosen one is final as it is
        record, feasible = select_trial(complete, choice)
        taken = TakenOn(record, feasible, [], runner.kept(record.rate_lambda))
    margin = config.choice.margin(runner.direct_accuracy, runner.validation_size)
    if not taken.feasible:
        warn_floor_missed(config, taken.chosen, choice.required, margin)
    report = TuningReport(
        **where,
        rate_lambda=taken.chosen.rate_lambda,
        chosen_by=chosen_by(config, taken),
        n_complete=len(complete),
        pareto=[t.model_copy(update={"number": None}) for t in pareto_front(complete)],
        trials=complete,
        stopped=stopped,
        lambda0=lambda0,
        trial_epochs=config.trial_epochs,
        completed=taken.completed,
        chosen_trial=taken.chosen.number,
        validation_floor_met=taken.feasible,
        retention_floor=config.choice.retention_floor,
        retention_margin=margin,
        direct_val_accuracy=runner.direct_accuracy,
        energy_model=config.energy_model,
        energy_reduction_target=config.choice.energy_reduction_target,
        direct_val_energy_nJ=runner.direct_energy,
    )
    mark_chosen(config.study.storage, name, taken.chosen)
    return SweepOutcome(report, tuning_metrics(report, taken.chosen), taken.payload)


def chosen_by(config: SweepConfig, taken: TakenOn) -> str:
    """What chose the lambda (:data:`direct2event.glue.reports.CHOSEN_BY`)."""
    if config.choice.energy_reduction_target is not None:
        return "energy_reduction_target"
    return "retention_floor" if taken.feasible else "most_accurate"


def warn_floor_missed(
    config: SweepConfig, chosen: TrialRecord, required: float, margin: float
) -> None:
    """Say what chose lambda when no trial kept the floor plus margin on validation. With an
    energy target the floor is not what chooses: that is said as information, not as a failed
    check (E's champion eligibility is its test retention against the floor, in the registry)."""
    c = config.choice
    if c.energy_reduction_target is not None:
        logger.info(
            "λ = %.4g chosen by the energy reduction target %g; on validation it keeps "
            "retention below %.4f (floor %.3f + margin %.4f), which this mode does not require",
            chosen.rate_lambda,
            c.energy_reduction_target,
            required,
            c.retention_floor,
            margin,
        )
        return
    logger.warning(
        "No trial reaches accuracy retention %.4f (floor %.3f + margin %.4f) on validation; "
        "chose the most accurate (λ = %.4g)",
        required,
        c.retention_floor,
        margin,
        chosen.rate_lambda,
    )


def tuning_metrics(report: TuningReport, chosen: TrialRecord) -> dict[str, dict[str, float]]:
    """The sweep's MLflow metrics (energy in nJ)."""
    metrics = {
        "tuning.n_complete": float(report.n_complete),
        "tuning.n_stopped": float(len(report.stopped)),
        "tuning.n_taken_on": float(len(report.completed)),
        "tuning.chosen_val_accuracy": chosen.val_accuracy,
        "tuning.chosen_energy_nJ": chosen.energy_nJ,
    }
    return {k: {"value": v, "step": 0} for k, v in metrics.items()}
