"""The report contracts: what the pipelines write and what the seeds command, the results
command and the notebook read, as typed models with a schema version.

A node returns one of these objects and :class:`direct2event.glue.datasets.ReportDataset`
writes it; a reader gets it back validated (:func:`~direct2event.glue.report_versions.read_report`). A file written before a
contract changed is read through its ``schema_version``: each model lists the upgrades from
older versions (:data:`UPGRADES`), so no reader guesses at missing keys.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Report(BaseModel):
    """A report's part: strict (an unknown key is an error) and immutable."""

    # NaN and infinity stay JSON constants, as Python's json writes and reads them
    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="constants")


# --- the sweep: tuning_report.json -------------------------------------------------------


class TrialRecord(Report):
    """One measured fine-tuning of E on the sweep's validation samples: a complete trial
    (``number``), or E at lambda = 0 (``number`` None)."""

    rate_lambda: float
    val_accuracy: float
    energy_nJ: float
    number: int | None = None


class StoppedRecord(Report):
    """A trial stopped early: its lambda, where (fraction of its fine-tuning) and why."""

    number: int
    rate_lambda: float
    fraction: float
    reason: str
    seconds: float | None = None


# what chose the lambda E is fine-tuned with
CHOSEN_BY = {
    "configured": "transfer.finetune.rate_lambda (the sweep is off or no trial completed)",
    "energy_reduction_target": "the weakest penalty reaching tuning.energy_reduction_target",
    "retention_floor": "the lowest energy keeping retention_floor + retention_margin",
    "most_accurate": "the most accurate trial (none kept retention_floor + retention_margin)",
    "unknown": "a report from before this was recorded",
}


class TuningReport(Report):
    """What the lambda sweep decided (``tuning_report.json``): ``rate_lambda`` is the strength
    E's final fine-tuning uses (the configured one when the sweep is off or no trial completed).
    The fields after ``trials`` are set when a trial chose it."""

    schema_version: int = 2
    rate_lambda: float
    enabled: bool
    chosen_by: str = "configured"  # what chose rate_lambda (CHOSEN_BY)
    n_complete: int = 0  # complete trials
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
    # whether the chosen lambda kept retention_floor + retention_margin on validation (None:
    # no trial chose lambda); with an energy target, lambda is chosen for its energy first
    validation_floor_met: bool | None = None
    retention_floor: float | None = None
    retention_margin: float | None = None
    direct_val_accuracy: float | None = None
    energy_model: str | None = None
    energy_reduction_target: float | None = None
    direct_val_energy_nJ: float | None = None

    @property
    def chosen_by_sweep(self) -> bool:
        """Whether a trial of the sweep chose ``rate_lambda``."""
        return self.validation_floor_met is not None


# --- the run: summary.json ---------------------------------------------------------------


class NetworkResult(Report):
    """One network (D or E) on the test split: accuracy, counted activity and energy."""

    accuracy: float
    energy_nJ: float  # under the run's energy model
    energy_nJ_by_model: dict[str, float]
    events_per_sample: float
    input_events_per_sample: float
    input_energy_nJ_by_model: dict[str, float]
    synops_per_sample: float
    ac_per_sample: float
    mac_per_sample: float
    firing_rates: dict[str, float]
    # NeuroBench's metrics (footprint_bytes, connection_sparsity, activation_sparsity,
    # membrane_updates, effective_macs, effective_acs, dense), computed by the neurobench
    # package; None where it is not installed
    neurobench: dict[str, float] | None = None


class BitMatchedAnn(Report):
    """D's architecture as a quantised ANN with ``bits``-bit activations in one pass (the fair
    baseline of arXiv 2409.08290): its energy under every model, E's reduction against it
    (below 1: E costs more) and the mean hidden spike rate at which E would break even."""

    bits: int
    energy_nJ_by_model: dict[str, float]
    event_reduction_by_model: dict[str, float | None]
    break_even_rate_by_model: dict[str, float | None]  # None: no rate breaks even
    event_spike_rate: float


class ParetoPoint(Report):
    """A trial on the sweep's Pareto front."""

    rate_lambda: float
    val_accuracy: float
    energy_nJ: float


class TuningSummary(Report):
    """The sweep as the run's summary tells it."""

    chosen_by: str  # what chose rate_lambda (CHOSEN_BY)
    n_complete: int
    n_stopped: int  # trials stopped early
    n_taken_on: int  # trials taken on to the whole fine-tuning
    validation_floor_met: bool | None  # None: no sweep chose lambda
    pareto: list[ParetoPoint]


class AblationRow(Report):
    """One step of the transfer added in turn, measured on the test split."""

    variant: str
    rate_lambda: float | None
    accuracy: float
    energy_nJ: float
    events_per_sample: float
    energy_gain_fraction: float  # its share of E's final energy saving against D


class Summary(Report):
    """A run's result (``summary.json``): D and E on the test split, the energy reduction under
    every energy model, and what bounds it (``energy_reduction_ceiling``: E's input alone)."""

    schema_version: int = 2
    dataset: str
    seed: int
    simulated: bool
    timesteps: int
    event_timesteps: int
    input_encoding: str
    energy_model: str
    splits: dict[str, int]
    direct: NetworkResult
    event: NetworkResult
    energy_reduction: float | None
    energy_reduction_by_model: dict[str, float | None]
    energy_reduction_ceiling: float | None
    energy_reduction_ceiling_by_model: dict[str, float | None]
    accuracy_retention: float | None
    rate_lambda: float
    tuning: TuningSummary
    ablation: list[AblationRow]
    bit_matched_ann: BitMatchedAnn | None = None


# --- the shift benchmark: shift.json ------------------------------------------------------


class ShiftMeasure(Report):
    """E (adapted, or recalibrated) on one set of samples."""

    accuracy: float
    events_per_sample: float
    energy_nJ_by_model: dict[str, float]


class CleanShift(Report):
    """D and E on the clean samples of the stage, E with each adaptation method."""

    d_accuracy: float
    d_energy_nJ_by_model: dict[str, float]
    e_accuracy: float
    e_events_per_sample: float
    e_energy_nJ_by_model: dict[str, float]
    adapted: dict[str, ShiftMeasure]


class ShiftRow(Report):
    """D and E under one shift at one severity (``level`` 1-3: mild, middle, strong)."""

    shift: str
    level: int
    severity: float
    d_accuracy: float
    e_accuracy: float
    e_events_per_sample: float
    e_energy_nJ_by_model: dict[str, float]
    adapted: dict[str, ShiftMeasure]
    retention: float | None
    recalibrated: ShiftMeasure | None = None  # on the qualifying shifts
    # the shift left every sample E sees as it was: the row holds the clean results
    input_unchanged: bool = False


class MethodSummary(Report):
    """What one adaptation method achieves over the qualifying shifts (middle severity)."""

    qualifying_shifts: list[str]
    recovered_fraction: float | None  # over the qualifying shifts but the geometric ones
    recovered_fraction_by_shift: dict[str, float]
    geometric_shifts: list[str] = Field(default_factory=list)  # reported apart
    recovered_fraction_geometric: float | None = None
    clean_cost_pp: float
    clean_events_change: float
    shift_events_change: float | None
    shift_events_change_by_shift: dict[str, float]
    recovery_samples: int | None
    recovery_to_shift: int | None
    recovery_back: int | None


class CalibrationSize(Report):
    """The conversion from a clean calibration set of ``samples``, no fine-tuning."""

    samples: int
    accuracy: float
    events_per_sample: float
    energy_nJ_by_model: dict[str, float]
    retention: float
    energy_reduction_by_model: dict[str, float | None]


class Recalibration(Report):
    """E's thresholds scaled again on unlabelled shifted samples: the upper reference."""

    samples: int
    recovered_fraction: float | None


class Baselines(Report):
    recalibration: Recalibration
    calibration_sizes: list[CalibrationSize]


class StreamMethod(Report):
    """One method through the stream test: its curves and its recoveries (samples)."""

    sliding_accuracy: list[float]
    positions: list[int]
    held_out_accuracy: list[float]
    plateau_to_shift: float
    recovery_to_shift: int | None
    plateau_back: float
    recovery_back: int | None
    # how close to the plateau counts as settled (tolerance or the held-out standard error)
    tolerance_to_shift: float | None = None
    tolerance_back: float | None = None


class StreamResult(Report):
    """Clean, then a shift, then clean again, sample by sample."""

    shift: str
    level: int
    held_out: int
    segment: int
    window: int
    methods: dict[str, StreamMethod]


class ShiftFailure(Report):
    """A shift that failed at one severity: named, the other rows kept."""

    shift: str
    level: int
    severity: float
    error: str


class ShiftReport(Report):
    """The shift benchmark (``shift.json``); only ``enabled`` when the stage is off."""

    schema_version: int = 2
    enabled: bool
    dataset: str | None = None
    seed: int | None = None
    samples: int | None = None
    energy_model: str | None = None
    adaptation: dict[str, Any] | None = None  # the adaptation parameters used
    clean: CleanShift | None = None
    rows: list[ShiftRow] = Field(default_factory=list)
    summary: dict[str, MethodSummary] = Field(default_factory=dict)
    mean_corruption_error: dict[str, float] = Field(default_factory=dict)
    corruption_error: dict[str, dict[str, float]] = Field(default_factory=dict)
    baselines: Baselines | None = None
    stream: StreamResult | None = None
    seconds: float | None = None
    seconds_by_part: dict[str, float] = Field(default_factory=dict)
    failed: list[ShiftFailure] = Field(default_factory=list)  # shifts that raised, by severity
    layers: dict[str, Any] | None = None  # per-layer rates and gains under one shift (why)
    front: dict[str, Any] | None = None  # event data: the denoising front before E


# --- the seeds study: seeds.json ---------------------------------------------------------


class SeedRun(Report):
    """One seed's row of the study, from its summary."""

    seed: int
    direct_accuracy: float
    event_accuracy: float
    accuracy_retention: float
    energy_reduction: float
    energy_reduction_by_model: dict[str, float | None]
    energy_reduction_ceiling: float | None
    events_per_sample: float
    synops_per_sample: float
    rate_lambda: float
    seconds: float | None = None
    neurobench_direct: dict[str, float] | None = None
    neurobench_event: dict[str, float] | None = None
    # E against the bit-matched ANN (its energy over E's) per energy model
    ann_event_reduction_by_model: dict[str, float | None] = Field(default_factory=dict)


class Stat(Report):
    """A figure over the seeds (None when a seed has none)."""

    mean: float | None
    std: float | None
    worst: float | None
    values: list[float | None]


class MethodStudy(Report):
    """One adaptation method over the seeds."""

    recovered_fraction: Stat
    clean_cost_pp: Stat
    clean_events_change: Stat
    shift_events_change: Stat
    recovery_samples: Stat
    qualifying_shifts: list[list[str]]


class ShiftStudy(Report):
    """The shift benchmark over the seeds."""

    seeds: list[int]
    samples: int
    methods: dict[str, MethodStudy]
    recalibration_recovered_fraction: Stat
    mean_corruption_error: dict[str, float]
    stage_seconds: float
    stage_share: dict[str, float] | None
    front: dict[str, Stat] | None = None  # event data: the clean front alone and with methods
    front_events_change: dict[str, Stat] | None = None  # worst events change, front and method
    front_clean_cost_pp: dict[str, Stat] | None = None  # on clean data, front and method


class SeedStudy(Report):
    """The pipeline once per seed (``seeds.json``): the runs, their mean and std per figure,
    and the worst case (lowest retention, lowest energy reduction), with the machine."""

    schema_version: int = 2
    dataset: str
    seeds: list[int]
    runs: list[SeedRun]
    mean: dict[str, Any]
    std: dict[str, Any]
    worst: dict[str, Any]
    machine: str
    torch: str
    retention_floor: float | None = None  # the runs' tuning.retention_floor
    shift: ShiftStudy | None = None
