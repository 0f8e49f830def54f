"""One dataset's parameters, validated once before any node: :class:`PipelineParams` and
:func:`load_settings`, and the dataset keys the project knows."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import torch
from pydantic import Field, ValidationError, model_validator

from direct2event.glue.masking import mask_credentials
from direct2event.glue.params.base import Strict
from direct2event.glue.params.network import (
    DataParams,
    FinetuneParams,
    ModelParams,
    TrainingParams,
    TransferParams,
)
from direct2event.glue.params.shift import ShiftParams
from direct2event.glue.params.sweep import TuningParams
from direct2event.glue.sweep.config import (
    OBJECTIVES,
    ChoiceConfig,
    StudyConfig,
    SweepConfig,
    study_name,
)
from direct2event.glue.sweep.early_stop import EarlyStop
from direct2event.snn.encoders import InputCoding
from direct2event.snn.energy import EnergyProfile, load_profiles
from direct2event.snn.finetuning import FinetuneConfig
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


class PipelineParams(Strict):
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
        priced = self.transfer.finetune.penalty_model
        if priced is not None and priced not in profiles:
            raise ValueError(
                f"transfer.finetune.penalty_model is '{priced}', which is not a profile in "
                f"energy_profiles; choose one of {sorted(profiles)}"
            )
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
            price=self.profiles()[ft.penalty_model or self.transfer.energy_model]
            if ft.penalty == "energy"
            else None,
        )

    def setup_fingerprint(self) -> dict[str, Any]:
        """What changes a sweep trial's result: the default study name is derived from it."""
        return {
            "seed": self.seed,
            # unset, the event cap leaves the study names of runs without it as they were
            "data": self.data.model_dump(
                exclude=None if self.data.max_events_per_bin else {"max_events_per_bin"}
            ),
            "model": self.model.model_dump(),
            "training": self.training.model_dump(exclude={"progress", "device"}),
            "transfer": self.transfer.model_dump(exclude={"ablation", "neurobench_samples"}),
            "source_model": self.source_model,
            "trial": {"epochs": self.trial_epochs, "validation": self.tuning.max_validation},
            "objectives": list(OBJECTIVES),  # studies of another energy unit stay apart
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
            margin_standard_errors=t.margin_standard_errors,
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
