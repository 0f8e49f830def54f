"""The parameters of every dataset pipeline: validated once, before any node, into typed objects.

The defaults here are the one source of defaults; they are MNIST's settings. Each
``conf/base/parameters_<key>.yml`` holds only what differs for that dataset, and
:class:`direct2event.glue.hooks.ProjectHooks` validates it (plus ``energy_profiles``) with
:func:`load_settings` and hands the result to every node as the dataset ``<key>.settings``.
``python -m direct2event params <key>`` prints a dataset's effective parameters.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from direct2event.data.event_shifts import EVENT_SEVERITIES, EVENT_SHIFTS
from direct2event.glue.masking import mask_credentials
from direct2event.glue.sweep.config import (
    ChoiceConfig,
    StudyConfig,
    SweepConfig,
    study_name,
)
from direct2event.glue.sweep.early_stop import EarlyStop
from direct2event.snn.adaptation import ADAPTATION_METHODS, AdaptationConfig
from direct2event.snn.calibration import MIN_CALIBRATION_SAMPLES
from direct2event.snn.encoders import InputCoding
from direct2event.snn.energy import EnergyProfile, load_profiles
from direct2event.snn.finetuning import FinetuneConfig
from direct2event.snn.shifts import IMAGE_SEVERITIES, IMAGE_SHIFTS, load_function
from direct2event.snn.training import FitConfig, resolve_device

DATASET_KEYS: tuple[str, ...] = (
    "mnist",
    "nmnist_sim",
    "digits",
    "cifar10",
    "nmnist",
    "dvs_gesture",
    "cifar10_dvs",
    "imagenet_subset",
)
TOP_LEVEL_PARAMS: tuple[str, ...] = ("energy_profiles", "seed_folder")
SWEEP_SUFFIX = ".sweep"  # <key>.sweep: a sweep worker's pipeline (up to the lambda sweep)
EVENT_DATASETS: tuple[str, ...] = ("nmnist_sim", "nmnist", "dvs_gesture", "cifar10_dvs")


def check_runtime_params(names: Iterable[str]) -> None:
    """Refuse ``--params`` whose first part names no parameter. Kedro adds them silently and no
    node reads them, so ``tuning.n_trials=6`` (for ``mnist.tuning.n_trials=6``) would run the
    defaults without a word."""
    unknown = sorted({n.split(".")[0] for n in names} - {*DATASET_KEYS, *TOP_LEVEL_PARAMS})
    if unknown:
        raise ValueError(
            f"--params {', '.join(unknown)}: no such parameter. A dataset's parameters go under "
            "its key (--params mnist.tuning.n_trials=6); the keys are "
            f"{', '.join(DATASET_KEYS + TOP_LEVEL_PARAMS)}."
        )


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataParams(_Strict):
    """How the source is split: calibration always comes out of train, test is never touched."""

    calibration_fraction: float = Field(0.02, gt=0, lt=0.5)
    validation_fraction: float = Field(
        0.1, gt=0, lt=0.5, description="used only when the source has no validation part"
    )
    max_train: int | None = Field(None, ge=1)
    max_validation: int | None = Field(5000, ge=1)
    max_test: int | None = Field(None, ge=1)
    max_events_per_bin: int | None = Field(
        None,
        ge=1,
        le=255,
        description="event datasets: events kept per pixel, polarity and time bin of the "
        "frames, for D and E alike (1: binary frames, a refractory filter as long as a bin); "
        "null: every event",
    )


class ModelParams(_Strict):
    """Architecture and neuron model shared by networks D and E."""

    arch: Literal["convnet", "vgg", "resnet"] = "convnet"
    channels: list[int | Literal["M"]] | None = Field(
        None, description="layer widths; null: the architecture's default ([16, 32] for convnet)"
    )
    hidden: int = Field(128, ge=0, description="width of the hidden linear layer (0: none)")
    pooling: Literal["max", "avg"] = Field(
        "max",
        description="max: spikes after the LIF layer; avg: currents before it (NIR can express "
        "it: export to NIR needs avg)",
    )
    timesteps: int = Field(4, ge=1, le=256, description="T of network D")
    beta: float = Field(0.5, ge=0, le=1, description="membrane decay per step")
    surrogate_width: float = Field(1.0, gt=0, description="width of the piecewise-linear surrogate")
    reset: Literal["subtract", "zero"] = "subtract"

    @model_validator(mode="after")
    def _pooling_fits(self) -> ModelParams:
        if self.pooling == "avg" and self.arch == "resnet":
            raise ValueError("pooling 'avg' is offered for convnet and vgg; resnet pools with max")
        return self


class TrainingParams(_Strict):
    """Direct-coded (surrogate-gradient BPTT) training of network D."""

    epochs: int = Field(4, ge=1)
    lr: float = Field(3e-3, gt=0)
    batch_size: int = Field(128, ge=1)
    weight_decay: float = Field(1e-4, ge=0)
    optimizer: Literal["adam", "sgd"] = "adam"
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    shift_augment: int = Field(1, ge=0, le=8, description="random shifts of up to N pixels")
    device: str = Field("auto", description="auto = CUDA when present, else CPU")
    bf16: bool = Field(False, description="bf16 autocast in training and fine-tuning (GPU)")
    progress: bool = True
    min_accuracy_over_chance: float = Field(
        2.0,
        ge=0,
        description="quality gate: D's validation accuracy must reach this multiple of chance "
        "(at most halfway from chance to 100 %), else the run stops before calibration; 0: off",
    )

    @model_validator(mode="after")
    def _device_known(self) -> TrainingParams:
        if self.device != "auto" and not self.device.startswith(("cpu", "cuda", "mps")):
            raise ValueError(
                f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}"
            )
        return self


class CalibrationParams(_Strict):
    """Surrogate-to-spike calibration on the calibration split."""

    max_samples: int = Field(
        1024, ge=MIN_CALIBRATION_SAMPLES, description="calibration samples used"
    )
    max_points: int = Field(200_000, ge=1000, description="(activation, rate) pairs per layer")


class ThresholdParams(_Strict):
    """Adaptive threshold scaling (``isotonic``) or the robust-normalisation baseline."""

    method: Literal["isotonic", "percentile"] = "isotonic"
    percentile: float = Field(99.9, gt=0, le=100)
    iterations: int = Field(14, ge=1, le=60, description="bisection steps on log(theta)")


class FinetuneParams(_Strict):
    """Regularised event-driven fine-tuning: ``CE + rate_lambda * mean spike rate``."""

    epochs: int = Field(3, ge=0, description="passes over the training split")
    warmup_epochs: int = Field(
        0,
        ge=0,
        description="passes at lambda = 0 before the penalty, trained once per run (the "
        "ablation's lambda = 0 row); every trial and the final fine-tuning continue from it",
    )
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(128, ge=1)
    rate_lambda: float = Field(
        5.0, ge=0, description="lambda when the sweep is off (the sweep chooses it otherwise)"
    )
    distill: bool = Field(True, description="alpha*CE + (1-alpha)*KL(D || E), D frozen")
    alpha: float = Field(0.4, ge=0, le=1)
    temperature: float = Field(2.0, gt=0)
    max_train: int | None = Field(None, ge=1, description="training samples per fine-tuning")
    train_thresholds: bool = Field(
        False, description="train E's per-channel thresholds with the weights (kept positive)"
    )
    optimizer: Literal["adam", "sgd"] = "adam"
    schedule: Literal["onecycle", "cosine", "constant"] = "cosine"
    weight_decay: float = Field(0.0, ge=0)


class AblationParams(_Strict):
    """Which ablation rows to run besides the four main ones."""

    enabled: bool = True
    ttfs_rows: bool = False


class EarlyStopParams(_Strict):
    """Sweep trials that stop before the end of their fine-tuning (see ``glue.sweep.early_stop.EarlyStop``)."""

    enabled: bool = True
    check_at: list[float] = Field(
        default_factory=lambda: [0.1, 0.3],
        description="fractions of a trial's optimizer steps after which it is measured",
    )
    slack: float = Field(
        0.004,
        ge=0,
        lt=1,
        description="a trial stops when its retention at a check is this far under the required "
        "retention_floor + retention_margin",
    )
    slack_sd: float | None = Field(
        2.0,
        gt=0,
        description="once the study has learnt how much checks overstate the final retention "
        "(3 complete trials), the slack narrows to this many standard errors of that "
        "overstatement (between slack / 4 and slack); null: slack alone",
    )
    events_tolerance: float = Field(
        0.01,
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


class TuningParams(_Strict):
    """The Optuna sweep of lambda: validation accuracy of E (max) against energy (min)."""

    enabled: bool = True
    n_trials: int = Field(
        6, ge=0, description="finished trials (complete or stopped early) the study should hold"
    )
    timeout_s: float | None = Field(None, gt=0, description="time budget of this run's trials")
    lambda_min: float = Field(0.5, gt=0)
    lambda_max: float = Field(50.0, gt=0)
    first_lambdas: list[float] = Field(
        default_factory=lambda: [2.0, 3.0],
        description="tried first when the study is new, in this order",
    )
    retention_floor: float = Field(0.995, gt=0, le=1)
    retention_margin: float = Field(
        0.001,
        ge=0,
        lt=0.1,
        description="chosen trials must reach retention_floor + this on validation: room for "
        "the validation-to-test shift of retention",
    )
    storage: str = Field(
        "sqlite:///data/07_model_output/optuna.db",
        description="the study's database: several workers share a PostgreSQL one",
    )
    heartbeat_interval_s: int = Field(
        30, ge=1, description="a running trial's heartbeat; idle workers poll this often"
    )
    grace_period_s: int = Field(
        90, ge=2, description="a trial without heartbeat this long failed (its worker died)"
    )
    study_name: str | None = Field(None, description="default: <key>-<fingerprint of the setup>")
    max_validation: int | None = Field(5000, ge=1, description="validation samples per trial")
    trial_epochs: int | float | None = Field(
        1,
        gt=0,
        description="penalised passes a trial runs: the first epochs of the final fine-tuning "
        "(its learning-rate schedule spans transfer.finetune.epochs), a fraction allowed (0.25: "
        "the first quarter of the first pass, for datasets whose pass is long); the trials "
        "reaching retention_floor then go on to the end, lowest energy first (six one-pass "
        "trials on MNIST cost what two whole ones did). None (or >= transfer.finetune.epochs): "
        "every trial runs them all",
    )
    completions: int = Field(
        1,
        ge=1,
        description="trials at most taken on to the full fine-tuning (lowest energy first, or "
        "weakest lambda first with an energy_reduction_target), until one reaches "
        "retention_floor + retention_margin on validation; each further one costs the rest of "
        "a fine-tuning (MNIST: 2 passes)",
    )
    tie_standard_errors: float = Field(
        1.0,
        ge=0,
        description="when no trial reaches retention_floor at trial length, those within this "
        "many standard errors of the most accurate one's validation accuracy are ties and the "
        "lowest-energy tie is taken on (short trials cannot rank lambdas that close: simulated "
        "N-MNIST, a quarter pass); 0: the most accurate",
    )
    energy_reduction_target: float | None = Field(
        None,
        gt=1,
        description="an energy reduction (D's energy over E's on validation, transfer."
        "energy_model) the chosen trial must reach: the weakest penalty reaching it is chosen "
        "(whole trials: the most accurate reaching it; when a weaker trial misses it, the "
        "lambda between the two on a log-log line), for when the input leaves room (see "
        "energy_reduction_ceiling). Short trials are judged at trial length, where E still "
        "spends more than at the end (simulated N-MNIST binary frames, a quarter pass: "
        "1.89-2.60x more; MNIST, one pass of three: 1.23-1.31x). With it, short trials "
        "stronger than one already reaching it stop before their first step, and those weaker "
        "than the nearest trial missing it stop when their events exceed that trial's at a "
        "check (early_stop.events_tolerance is off). None (the default: a target depends on "
        "the dataset's input): the lowest energy reaching retention_floor",
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


class TransferParams(_Strict):
    """Everything from network D to network E."""

    input_encoding: Literal["rate", "regular", "ttfs", "analog", "frames"] = Field(
        "regular",
        description="E's input: rate | regular | ttfs | analog (hybrid: first layer MACs) | "
        "frames (event datasets)",
    )
    timesteps: int = Field(3, ge=1, le=256, description="T of network E")
    energy_model: str = Field("per_event", description="a profile of energy_profiles")
    calibration: CalibrationParams = CalibrationParams()
    thresholds: ThresholdParams = ThresholdParams()
    finetune: FinetuneParams = FinetuneParams()
    ablation: AblationParams = AblationParams()


class AdaptationParams(_Strict):
    """Online threshold adaptation of E (direct2event.snn.adaptation), compared in the stage."""

    methods: list[Literal["modulation", "homeostasis"]] = Field(
        default_factory=lambda: list(ADAPTATION_METHODS),
        description="modulation (current statistics) | homeostasis (firing rates)",
    )
    momentum: float = Field(
        0.99, ge=0, lt=1, description="per sample; time constant ~ 1/(1-momentum) samples"
    )
    step: float = Field(
        0.005, ge=0, le=1, description="homeostasis: share of the rate error corrected per sample"
    )
    max_gain: float = Field(4.0, ge=1, description="bound of the gain / threshold factor")
    batch_size: int | None = Field(
        None,
        ge=1,
        description="samples per adaptation update in the table (default: E's "
        "evaluation batch; small batches run several times slower per sample on a CPU)",
    )
    warmup: int = Field(
        100, ge=0, description="unlabelled shifted samples adapted on before the table's samples"
    )

    def config(self, method: str) -> AdaptationConfig:
        return AdaptationConfig(method, self.momentum, self.step, self.max_gain)  # type: ignore[arg-type]


class CustomShift(_Strict):
    """A user's shift: ``package.module:function`` with the signature of the built-ins."""

    function: str = Field(description="import path package.module:function")
    severities: list[float] = Field(min_length=1)


class StreamParams(_Strict):
    """The stream test: clean, then an abrupt shift, then clean again, sample by sample."""

    shift: str | None = Field(
        None, description="default: the shift that costs E most at its middle severity"
    )
    segment: int = Field(200, ge=10, description="samples per segment")
    held_out: int = Field(150, ge=10, description="held-out samples each checkpoint is scored on")
    checkpoint_every: int = Field(25, ge=1)
    window: int = Field(50, ge=1, description="sliding window of the online accuracy")
    tolerance: float = Field(0.01, gt=0, description="recovered: within this of the plateau")


class ShiftParams(_Strict):
    """The shift benchmark: E (and D) on shifted test data, with and without adaptation."""

    enabled: bool = True
    max_samples: int = Field(500, ge=10, description="test samples per shift and severity")
    severities: dict[str, list[float]] = Field(
        default_factory=dict,
        description="built-in shifts' severities to override (default: all of the dataset kind)",
    )
    skip: list[str] = Field(default_factory=list, description="built-in shifts left out")
    custom: dict[str, CustomShift] = Field(default_factory=dict)
    qualifying_loss: float = Field(
        0.02, ge=0, description="shifts where E loses this much at the middle severity count"
    )
    calibration_sizes: list[int] = Field(
        default_factory=lambda: [16, 64, 256, 1024],
        description="clean calibration-set sizes of the conversion baseline",
    )
    recalibration_samples: int = Field(
        128, ge=MIN_CALIBRATION_SAMPLES, description="unlabelled shifted samples to recalibrate"
    )
    adaptation: AdaptationParams = AdaptationParams()
    stream: StreamParams = StreamParams()

    @model_validator(mode="after")
    def _sizes(self) -> ShiftParams:
        small = [n for n in self.calibration_sizes if n < MIN_CALIBRATION_SAMPLES]
        if small:
            raise ValueError(
                f"shift.calibration_sizes {small} are below {MIN_CALIBRATION_SAMPLES} samples"
            )
        for name, custom in self.custom.items():
            try:
                load_function(custom.function)
            except ValueError as err:
                raise ValueError(f"shift.custom.{name}: {err}") from None
        return self

    def table(self, events: bool) -> dict[str, tuple[Any, list[float]]]:
        """Every shift of the run: name -> (function, severities)."""
        functions: dict[str, Any] = EVENT_SHIFTS if events else IMAGE_SHIFTS  # type: ignore[assignment]
        defaults: dict[str, Any] = EVENT_SEVERITIES if events else IMAGE_SEVERITIES
        out = {
            name: (fn, list(self.severities.get(name, defaults[name])))
            for name, fn in functions.items()
            if name not in self.skip
        }
        for name, custom in self.custom.items():
            out[name] = (load_function(custom.function), list(custom.severities))
        return out

    def check_names(self, events: bool) -> None:
        known = EVENT_SHIFTS if events else IMAGE_SHIFTS
        kind = "event" if events else "image"
        unknown = [n for n in [*self.severities, *self.skip] if n not in known]
        if unknown:
            raise ValueError(
                f"shift.severities / shift.skip name {unknown}, which are not built-in {kind} "
                f"shifts ({sorted(known)}); add your own under shift.custom"
            )
        clash = [n for n in self.custom if n in known]
        if clash:
            raise ValueError(f"shift.custom {clash} reuse built-in names; rename them")
        if self.stream.shift is not None and self.stream.shift not in {*known, *self.custom}:
            raise ValueError(f"shift.stream.shift '{self.stream.shift}' is not a shift of this run")


class PipelineParams(_Strict):
    """Everything under one dataset key, plus the shared energy profiles."""

    dataset: Literal[DATASET_KEYS]  # type: ignore[valid-type]
    seed: int = Field(
        0, description="one seed for the split, data order, initialisation, encoders and sweep"
    )
    data: DataParams = DataParams()
    model: ModelParams = ModelParams()
    training: TrainingParams = TrainingParams()
    transfer: TransferParams = TransferParams()
    tuning: TuningParams = TuningParams()
    shift: ShiftParams = ShiftParams()
    source_model: str | None = Field(
        None,
        description="start from a registered network D (models:/<key>-direct/<version>, "
        "models:/<key>-direct/latest or latest) instead of training one",
    )
    register_models: bool = True
    energy_profiles: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="conf/base/parameters_energy.yml (shared)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> PipelineParams:
        events = self.dataset in EVENT_DATASETS
        encoding = self.transfer.input_encoding
        if events and encoding != "frames":
            raise ValueError(
                f"transfer.input_encoding must be 'frames' for the event dataset {self.dataset}"
            )
        if not events and encoding == "frames":
            raise ValueError(
                f"transfer.input_encoding 'frames' needs an event dataset; {self.dataset} is "
                "static: use rate, regular, ttfs or analog"
            )
        if not events and self.data.max_events_per_bin is not None:
            raise ValueError(
                "data.max_events_per_bin caps event frames; "
                f"{self.dataset} is a static-image dataset: remove it"
            )
        if events and self.transfer.ablation.ttfs_rows:
            raise ValueError(
                "transfer.ablation.ttfs_rows needs a static-image dataset (TTFS encodes images); "
                f"{self.dataset} is an event dataset"
            )
        if events and self.model.timesteps % self.transfer.timesteps:
            raise ValueError(
                "transfer.timesteps must divide model.timesteps for event datasets (the frames "
                "are binned once, to model.timesteps bins; E's steps each sum adjacent bins): "
                f"got {self.transfer.timesteps} and {self.model.timesteps}"
            )
        self.shift.check_names(events)
        try:
            profiles = load_profiles(self.energy_profiles)
        except (TypeError, ValueError) as err:
            raise ValueError(f"energy_profiles (conf/base/parameters_energy.yml): {err}") from None
        if self.transfer.energy_model not in profiles:
            raise ValueError(
                f"transfer.energy_model is '{self.transfer.energy_model}', which is not a "
                f"profile in energy_profiles; choose one of {sorted(profiles)} or add it to "
                "conf/base/parameters_energy.yml"
            )
        return self

    @property
    def is_event_dataset(self) -> bool:
        return self.dataset in EVENT_DATASETS

    @property
    def direct_coding(self) -> InputCoding:
        """Network D's input: analog images, or event frames fed as values, at model.timesteps."""
        return InputCoding("frames" if self.is_event_dataset else "analog", self.model.timesteps)

    @property
    def event_coding(self) -> InputCoding:
        """Network E's input: the configured event encoding at transfer.timesteps."""
        return InputCoding(self.transfer.input_encoding, self.transfer.timesteps)

    def profiles(self) -> dict[str, EnergyProfile]:
        """The energy profiles as :class:`direct2event.snn.energy.EnergyProfile` objects."""
        return load_profiles(self.energy_profiles)

    @property
    def device(self) -> torch.device:
        """The torch device named by ``training.device`` (auto: CUDA when present)."""
        return resolve_device(self.training.device)

    def _fit_config(
        self, section: TrainingParams | FinetuneParams, coding: InputCoding, shift_augment: int = 0
    ) -> FitConfig:
        """BPTT settings from a section (D's training and E's fine-tuning share these fields)."""
        return FitConfig(
            epochs=section.epochs,
            lr=section.lr,
            batch_size=section.batch_size,
            coding=coding,
            weight_decay=section.weight_decay,
            optimizer=section.optimizer,
            schedule=section.schedule,
            shift_augment=shift_augment,
            seed=self.seed,
            bf16=self.training.bf16,
            progress=self.training.progress,
            desc=f"{self.dataset} D",
        )

    def direct_fit_config(self) -> FitConfig:
        """The BPTT settings of network D's direct-coded training."""
        return self._fit_config(self.training, self.direct_coding, self.training.shift_augment)

    def finetune_config(self, rate_lambda: float) -> FinetuneConfig:
        """E's fine-tuning at strength ``rate_lambda`` as configured: every fine-tuning of a run
        (the sweep's trials, the final one, the ablation rows) starts from this one object."""
        ft = self.transfer.finetune
        return FinetuneConfig(
            fit=self._fit_config(ft, self.event_coding),
            rate_lambda=rate_lambda,
            distill=ft.distill,
            teacher=self.direct_coding,
            alpha=ft.alpha,
            temperature=ft.temperature,
            train_thresholds=ft.train_thresholds,
            max_train=ft.max_train,
            label=self.dataset,
        )

    def setup_fingerprint(self) -> dict[str, Any]:
        """What changes a sweep trial's result: the default study name is derived from it."""
        return {
            "seed": self.seed,
            # unset, the event cap (added 2026-12-02) leaves the study names of before as they were
            "data": self.data.model_dump(
                exclude=None if self.data.max_events_per_bin else {"max_events_per_bin"}
            ),
            "model": self.model.model_dump(),
            "training": self.training.model_dump(exclude={"progress", "device"}),
            "transfer": self.transfer.model_dump(exclude={"ablation"}),
            "source_model": self.source_model,
            "trial": {"epochs": self.trial_epochs, "validation": self.tuning.max_validation},
        }

    def sweep_config(self) -> SweepConfig:
        """The lambda sweep as configured, in the one object the sweep reads."""
        t, stop = self.tuning, self.tuning.early_stop
        study = StudyConfig(
            storage=t.storage,
            name=self.study_name,
            n_trials=t.n_trials,
            lambda_min=t.lambda_min,
            lambda_max=t.lambda_max,
            first_lambdas=tuple(t.first_lambdas),
            timeout_s=t.timeout_s,
            seed=self.seed,
            heartbeat_interval_s=t.heartbeat_interval_s,
            grace_period_s=t.grace_period_s,
            user_attrs={"dataset": self.dataset, "setup": self.setup_fingerprint()},
        )
        choice = ChoiceConfig(
            retention_floor=t.retention_floor,
            retention_margin=t.retention_margin,
            completions=t.completions,
            tie_standard_errors=t.tie_standard_errors,
            energy_reduction_target=t.energy_reduction_target,
        )
        rule = EarlyStop(
            at=tuple(stop.check_at),
            slack=stop.slack,
            events_tolerance=stop.events_tolerance,
            slack_sd=stop.slack_sd,
        )
        return SweepConfig(
            dataset=self.dataset,
            study=study,
            choice=choice,
            early_stop=rule if stop.enabled else None,
            short=self.trial_epochs < self.transfer.finetune.epochs,
            trial_epochs=self.trial_epochs,
            energy_model=self.transfer.energy_model,
            shown_storage=mask_credentials(t.storage),
        )

    @property
    def trial_epochs(self) -> int | float:
        """Penalised passes of a sweep trial (at most ``transfer.finetune.epochs``; an int when
        whole, so the setup fingerprint and the study name of whole-pass trials stay as they
        were)."""
        full = self.transfer.finetune.epochs
        passes = min(self.tuning.trial_epochs or full, full)
        return int(passes) if float(passes).is_integer() else passes

    @property
    def study_name(self) -> str:
        """``tuning.study_name``, or ``<key>-<8 hex digits of the setup fingerprint>``."""
        if self.tuning.study_name:
            return self.tuning.study_name
        return study_name(self.dataset, self.setup_fingerprint())

    def loggable(self) -> dict[str, Any]:
        """Every parameter flattened (``training.lr``), credentials in URLs masked: what MLflow
        shows. The energy profiles are logged as a file, not as parameters."""
        flat: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else str(k), v)
            else:
                flat[prefix] = mask_credentials(value) if isinstance(value, str) else value

        walk("", self.model_dump(exclude={"energy_profiles"}))
        return flat


class ParameterError(ValueError):
    """Parameters that fail validation; the message lists each bad key and what is allowed."""


def load_settings(
    namespace: str, raw: dict[str, Any] | None, energy_profiles: dict[str, Any]
) -> PipelineParams:
    """Validate one dataset's parameters (its yml over the defaults here) and the shared energy
    profiles, raising :class:`ParameterError` with one readable line per bad key."""
    values = {"dataset": namespace, **(raw or {}), "energy_profiles": energy_profiles}
    try:
        params = PipelineParams.model_validate(values)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            where = ".".join(str(p) for p in e["loc"])
            got = e.get("input")
            shown = "" if isinstance(got, dict) or "input" not in e else f" (got {got!r})"
            key = f"{namespace}.{where}" if where else namespace
            lines.append(f"  {key}: {mask_credentials(e['msg'] + shown)}")
        raise ParameterError(
            f"Invalid parameters for dataset '{namespace}' (conf/base/parameters_{namespace}.yml, "
            "conf/base/parameters_energy.yml or --params):\n" + "\n".join(lines)
        ) from None
    if params.dataset != namespace:
        raise ParameterError(
            f"parameters_{namespace}.yml sets dataset: {params.dataset}; it must be '{namespace}'."
        )
    return params
