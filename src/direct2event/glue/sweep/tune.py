"""One sweep from start to decision: run the study (this worker's share of its trials), choose
lambda from its trials, take short trials on to the full fine-tuning, and report."""

from __future__ import annotations

import logging
from typing import Any, NamedTuple, Protocol

from optuna.trial import TrialState

from direct2event.glue.reports import TrialRecord, TuningReport
from direct2event.glue.sweep.config import SweepConfig
from direct2event.glue.sweep.early_stop import Judge
from direct2event.glue.sweep.policy import pareto_front, select_trial, take_on
from direct2event.glue.sweep.study import complete_records, run_study, stopped_record
from direct2event.glue.sweep.tracking import mark_chosen, mlflow_trial_run
from direct2event.glue.tracking import NJ_PER_UJ
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
    rule = config.stop_rule(runner.direct_accuracy, runner.direct_energy)
    study = run_study(
        config.study,
        runner.evaluate,
        mlflow_trial_run(config.dataset, name, offset=epoch_offset),
        rule,
    )
    trials = study.get_trials(deepcopy=False)
    complete = complete_records(trials)
    stopped = [stopped_record(t) for t in trials if t.state == TrialState.PRUNED]
    where = {"enabled": True, "study_name": name, "storage": config.shown_storage}
    if not complete:
        logger.warning("No complete trial in study %s: λ from the configuration", name)
        return SweepOutcome(configured(configured_lambda, **where, stopped=stopped), {}, None)
    choice = config.policy(runner.direct_accuracy, runner.direct_energy, runner.validation_size)
    if config.short:  # trials ran the first epochs: the chosen ones go on to the end
        taken = take_on(complete, choice, runner.complete)
        record, floor_met, completed, best = (
            taken.chosen,
            taken.feasible,
            taken.completed,
            taken.payload,
        )
    else:  # every trial ran the whole fine-tuning: the chosen one is final as it is
        record, floor_met = select_trial(complete, choice)
        completed, best = [], runner.kept(record.rate_lambda)
    c = config.choice
    if not floor_met:
        logger.warning(
            "No trial reaches accuracy retention %.4f (floor %.3f + margin %.4f) on validation; "
            "chose %s (λ = %.4g)",
            c.required,
            c.retention_floor,
            c.retention_margin,
            "the most accurate"
            if c.energy_reduction_target is None
            else f"for the energy reduction target {c.energy_reduction_target}",
            record.rate_lambda,
        )
    report = TuningReport(
        **where,
        rate_lambda=record.rate_lambda,
        n_trials=len(complete),
        pareto=[t.model_copy(update={"number": None}) for t in pareto_front(complete)],
        trials=complete,
        stopped=stopped,
        lambda0=lambda0,
        trial_epochs=config.trial_epochs,
        completed=completed,
        chosen_trial=record.number,
        floor_met=floor_met,
        retention_floor=c.retention_floor,
        retention_margin=c.retention_margin,
        direct_val_accuracy=runner.direct_accuracy,
        energy_model=config.energy_model,
        energy_reduction_target=c.energy_reduction_target,
        direct_val_energy_uJ=runner.direct_energy,
    )
    mark_chosen(config.study.storage, name, record)
    metrics = {
        "tuning.rate_lambda": report.rate_lambda,
        "tuning.n_trials": float(len(complete)),
        "tuning.n_stopped": float(len(stopped)),
        "tuning.n_completed": float(len(completed)),
        "tuning.chosen_val_accuracy": record.val_accuracy,
        "tuning.chosen_energy_nJ": record.energy_uJ * NJ_PER_UJ,
    }
    return SweepOutcome(report, {k: {"value": v, "step": 0} for k, v in metrics.items()}, best)
