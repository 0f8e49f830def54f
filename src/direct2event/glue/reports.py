"""The report contracts: what the pipelines write and what the seeds command, the results
command and the notebook read, as typed models with a schema version.

A node returns one of these objects and a :class:`direct2event.glue.datasets.ReportDataset`
writes it; a reader gets it back validated. A file written before a contract changed is read
through its ``schema_version`` (:func:`upgrade`), never by guessing at missing keys.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Report(BaseModel):
    """A report file's model: strict, immutable, and versioned."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TrialRecord(Report):
    """One measured fine-tuning of E on the sweep's validation samples: a complete trial
    (``number``), or E at lambda = 0 (``number`` None)."""

    rate_lambda: float
    val_accuracy: float
    energy_uJ: float
    number: int | None = None


class StoppedRecord(Report):
    """A trial stopped early: its lambda, where (fraction of its fine-tuning) and why."""

    number: int
    rate_lambda: float
    fraction: float
    reason: str
    seconds: float | None = None


class TuningReport(Report):
    """What the lambda sweep decided (``tuning_report.json``): ``rate_lambda`` is the strength
    E's final fine-tuning uses (the configured one when the sweep is off or no trial completed).
    The fields after ``trials`` are set when a trial chose it."""

    schema_version: int = 1
    rate_lambda: float
    enabled: bool
    n_trials: int = 0  # complete trials
    pareto: list[TrialRecord] = Field(default_factory=list)
    trials: list[TrialRecord] = Field(default_factory=list)
    stopped: list[StoppedRecord] = Field(default_factory=list)  # early-stopped (PRUNED) trials
    study_name: str | None = None
    storage: str | None = None  # credentials masked
    lambda0: TrialRecord | None = None
    # trials taken on to the full fine-tuning (when trials run only its first trial_epochs),
    # with their final validation accuracy and energy; the chosen one is among them
    trial_epochs: int | float | None = None  # int when whole
    completed: list[TrialRecord] = Field(default_factory=list)
    chosen_trial: int | None = None
    floor_met: bool | None = None  # None: no trial chose lambda
    retention_floor: float | None = None
    retention_margin: float | None = None
    direct_val_accuracy: float | None = None
    energy_model: str | None = None
    energy_reduction_target: float | None = None
    direct_val_energy_uJ: float | None = None

    @property
    def chosen_by_sweep(self) -> bool:
        """Whether a trial of the sweep chose ``rate_lambda``."""
        return self.floor_met is not None
