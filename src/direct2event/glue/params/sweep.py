"""Parameters of the lambda sweep: the study, the choice and the early-stop rule; their
defaults are the sweep's own (:mod:`direct2event.glue.sweep.config`)."""

from __future__ import annotations

from pydantic import Field, model_validator

from direct2event.glue.params.base import Strict, default_of
from direct2event.glue.sweep.config import ChoiceConfig, StudyConfig
from direct2event.glue.sweep.early_stop import EarlyStop


class EarlyStopParams(Strict):
    """Sweep trials that stop before the end of their fine-tuning (``EarlyStop``)."""

    enabled: bool = True
    check_at: list[float] = Field(
        default_factory=lambda: list(default_of(EarlyStop, "at")),
        description="fractions of a trial's optimizer steps after which it is measured",
    )
    slack: float = Field(
        default_of(EarlyStop, "slack"),
        ge=0,
        lt=1,
        description="a trial stops when its retention at a check is this far under the required "
        "retention_floor + retention_margin",
    )
    slack_sd: float | None = Field(
        default_of(EarlyStop, "slack_sd"),
        gt=0,
        description="once the study has learnt how much checks overstate the final retention "
        "(3 complete trials), the slack narrows to this many standard errors of that "
        "overstatement (between slack / 4 and slack); null: slack alone",
    )
    events_tolerance: float = Field(
        default_of(EarlyStop, "events_tolerance"),
        ge=0,
        description="a trial stops when its events per sample at a check exceed the best "
        "feasible trial's at the same check by more than this fraction (not with "
        "tuning.energy_reduction_target)",
    )

    @model_validator(mode="after")
    def _fractions(self) -> EarlyStopParams:
        bad = [f for f in self.check_at if not 0 < f < 1]
        if bad:
            raise ValueError(
                f"tuning.early_stop.check_at {bad} must lie strictly between 0 and 1 (fractions "
                "of a trial's fine-tuning steps)"
            )
        return self


class TuningParams(Strict):
    """The Optuna sweep of lambda: validation accuracy of E (max) against energy (min)."""

    enabled: bool = True
    n_trials: int = Field(
        default_of(StudyConfig, "n_trials"),
        ge=0,
        description="finished trials (complete or stopped early) the study should hold",
    )
    timeout_s: float | None = Field(
        default_of(StudyConfig, "timeout_s"), gt=0, description="time budget of this run's trials"
    )
    lambda_min: float = Field(default_of(StudyConfig, "lambda_min"), gt=0)
    lambda_max: float = Field(default_of(StudyConfig, "lambda_max"), gt=0)
    first_lambdas: list[float] = Field(
        default_factory=lambda: list(default_of(StudyConfig, "first_lambdas")),
        description="tried first when the study is new, in this order",
    )
    retention_floor: float = Field(default_of(ChoiceConfig, "retention_floor"), gt=0, le=1)
    retention_margin: float = Field(
        default_of(ChoiceConfig, "retention_margin"),
        ge=0,
        lt=0.1,
        description="chosen trials must reach retention_floor + this on validation: room for "
        "the validation-to-test shift of retention",
    )
    margin_standard_errors: float | None = Field(
        default_of(ChoiceConfig, "margin_standard_errors"),
        ge=0,
        description="the margin tied to validation noise: at least this many standard errors "
        "of a retention at the floor on the validation samples (null: retention_margin alone)",
    )
    storage: str = Field(
        default_of(StudyConfig, "storage"),
        description="the study's database: several workers share a PostgreSQL one",
    )
    heartbeat_interval_s: int = Field(
        default_of(StudyConfig, "heartbeat_interval_s"),
        ge=1,
        description="a running trial's heartbeat; idle workers poll this often",
    )
    grace_period_s: int = Field(
        default_of(StudyConfig, "grace_period_s"),
        ge=2,
        description="a trial silent this long failed (its worker died); its lambda runs again",
    )
    study_name: str | None = Field(None, description="default: <key>-<fingerprint of the setup>")
    max_validation: int | None = Field(5000, ge=1, description="validation samples per trial")
    trial_epochs: int | float | None = Field(
        1,
        gt=0,
        description="penalised passes a trial runs: the first epochs of the final fine-tuning "
        "(its learning-rate schedule spans transfer.finetune.epochs), a fraction allowed (0.25: "
        "the first quarter of the first pass, for datasets whose pass is long); the trials "
        "reaching retention_floor then go on to the end, lowest energy first. None (or >= "
        "transfer.finetune.epochs): every trial runs them all",
    )
    completions: int = Field(
        default_of(ChoiceConfig, "completions"),
        ge=1,
        description="trials at most taken on to the full fine-tuning (lowest energy first, or "
        "weakest lambda first with an energy_reduction_target), until one reaches "
        "retention_floor + retention_margin on validation; each further one costs the rest of "
        "a fine-tuning",
    )
    tie_standard_errors: float = Field(
        default_of(ChoiceConfig, "tie_standard_errors"),
        ge=0,
        description="when no trial reaches retention_floor at trial length, those within this "
        "many standard errors of the most accurate one's validation accuracy are ties and the "
        "lowest-energy tie is taken on (short trials cannot rank lambdas that close); 0: the "
        "most accurate",
    )
    energy_reduction_target: float | None = Field(
        default_of(ChoiceConfig, "energy_reduction_target"),
        gt=1,
        description="an energy reduction (D's energy over E's on validation, transfer."
        "energy_model) the chosen trial must reach: the weakest penalty reaching it is chosen "
        "(whole trials: the most accurate reaching it; when a weaker trial misses it, the "
        "lambda between the two on a log-log line). Short trials are judged at trial length, "
        "where E still spends more than at the end. With it, short trials stronger than one "
        "already reaching it stop before their first step, and those weaker than the nearest "
        "trial missing it stop when their events exceed that trial's at a check. None: the "
        "lowest energy reaching retention_floor",
    )
    early_stop: EarlyStopParams = Field(default_factory=EarlyStopParams)

    @model_validator(mode="after")
    def _range(self) -> TuningParams:
        if self.lambda_min >= self.lambda_max:
            raise ValueError(
                f"tuning.lambda_min ({self.lambda_min}) must be below tuning.lambda_max "
                f"({self.lambda_max})"
            )
        if self.grace_period_s <= self.heartbeat_interval_s:
            raise ValueError(
                f"tuning.grace_period_s ({self.grace_period_s}) must exceed "
                f"tuning.heartbeat_interval_s ({self.heartbeat_interval_s}), else live trials "
                "are failed"
            )
        outside = [v for v in self.first_lambdas if not self.lambda_min <= v <= self.lambda_max]
        if outside:
            raise ValueError(
                f"tuning.first_lambdas {outside} lie outside [lambda_min, lambda_max] = "
                f"[{self.lambda_min}, {self.lambda_max}]"
            )
        return self
