"""What one lambda sweep is asked to do: the study (where, how many trials, over which range)
and the choice (retention floor, energy target, trials taken on), in one object the pipeline's
node builds from the validated parameters and hands to :func:`direct2event.glue.sweep.tune.tune`.

Light on purpose (no Optuna, MLflow or SQLAlchemy import): the parameter models read their
defaults from here, and validating a parameter file must stay cheap.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, replace
from typing import Any

from direct2event.glue.sweep.early_stop import EarlyStop
from direct2event.glue.sweep.policy import Choice

PARAM = "rate_lambda"  # the trials' Optuna parameter
OBJECTIVES = ("val_accuracy", "energy_nJ")  # maximised, minimised
DEFAULT_STORAGE = "sqlite:///data/07_model_output/optuna.db"


def study_name(dataset: str, setup: dict[str, Any]) -> str:
    """``<dataset>-<8 hex digits>``: the same setup gives the same study, a changed one a new."""
    digest = hashlib.sha256(json.dumps(setup, sort_keys=True, default=str).encode()).hexdigest()
    return f"{dataset}-{digest[:8]}"


@dataclass(frozen=True)
class StudyConfig:
    """One Optuna study of lambda: its storage and name, the trials it should hold (finished:
    complete or stopped early), the log-uniform range, and the workers' bookkeeping."""

    storage: str = DEFAULT_STORAGE
    name: str = "study"
    n_trials: int = 6
    lambda_min: float = 0.5
    lambda_max: float = 50.0
    first_lambdas: tuple[float, ...] = (2.0, 3.0)  # tried first when the study is new
    timeout_s: float | None = None  # this worker's time budget for trials
    seed: int = 0
    heartbeat_interval_s: int = 30  # a running trial's heartbeat; idle workers poll this often
    grace_period_s: int = 90  # a trial silent this long failed: its worker died
    user_attrs: dict[str, Any] = field(default_factory=dict)  # the setup, for optuna-dashboard


@dataclass(frozen=True)
class ChoiceConfig:
    """How a lambda is chosen from the study's trials (:mod:`direct2event.glue.sweep.policy`)."""

    retention_floor: float = 0.995
    retention_margin: float = 0.001
    completions: int = 1  # trials at most taken on to the full fine-tuning
    tie_standard_errors: float = 1.0
    energy_reduction_target: float | None = None
    # the margin tied to validation noise: at least this many standard errors of the
    # retention measured at the floor on the validation samples; None: retention_margin alone
    margin_standard_errors: float | None = None

    @property
    def required(self) -> float:
        """The validation retention a chosen trial must reach: floor + margin."""
        return self.retention_floor + self.retention_margin

    def margin(self, direct_accuracy: float, validation_size: int) -> float:
        """The margin over the floor: ``retention_margin``, or ``margin_standard_errors``
        binomial standard errors of a retention at the floor measured on ``validation_size``
        samples (``sqrt(p (1 - p) / n) / a_D`` with ``p = floor * a_D``), whichever is larger:
        a choice that clears it holds on the test split whatever CPU drew the trials."""
        if not self.margin_standard_errors:
            return self.retention_margin
        p = self.retention_floor * direct_accuracy
        se = math.sqrt(max(p * (1 - p), 0.0) / max(validation_size, 1)) / max(direct_accuracy, 1e-9)
        return max(self.retention_margin, self.margin_standard_errors * se)


@dataclass(frozen=True)
class SweepConfig:
    """Everything one sweep needs: ``short`` when trials run only the first ``trial_epochs`` of
    the fine-tuning (the chosen ones are then taken on to its end); ``early_stop`` None: no
    trial stops early."""

    dataset: str
    study: StudyConfig
    choice: ChoiceConfig = field(default_factory=ChoiceConfig)
    early_stop: EarlyStop | None = field(default_factory=EarlyStop)
    short: bool = True
    trial_epochs: int | float | None = None
    energy_model: str = "per_event"
    shown_storage: str = ""  # the storage URL with its credentials masked

    def policy(self, direct_accuracy: float, direct_energy: float, validation_size: int) -> Choice:
        """The choice rule's settings once D is measured on the trials' samples."""
        c = self.choice
        return Choice(
            direct_accuracy=direct_accuracy,
            required=c.retention_floor + c.margin(direct_accuracy, validation_size),
            candidate_at=c.retention_floor,
            completions=c.completions,
            validation_size=validation_size,
            tie_standard_errors=c.tie_standard_errors,
            direct_energy=direct_energy,
            energy_target=c.energy_reduction_target,
        )

    def stop_rule(
        self, direct_accuracy: float, direct_energy: float, validation_size: int = 1
    ) -> EarlyStop | None:
        """The early-stop rule with this run's references. With an energy target the weaker
        penalties are the candidates, so none stops for spending more than the lowest-energy
        feasible trial; and only trials taken on are ruled out by their lambda (whole trials
        choose the most accurate trial reaching the target)."""
        if self.early_stop is None:
            return None
        target = self.choice.energy_reduction_target
        return replace(
            self.early_stop,
            direct_accuracy=direct_accuracy,
            required=self.choice.retention_floor
            + self.choice.margin(direct_accuracy, validation_size),
            events_tolerance=None if target else self.early_stop.events_tolerance,
            energy_target=target if self.short else None,
            direct_energy=direct_energy,
        )
