"""Pydantic models of every dataset pipeline's parameters (``conf/base/parameters_<key>.yml``).

All parameters are validated before any node runs (see :mod:`direct2event.hooks`), so a typo or
an out-of-range value stops the run with a message that names the key and the allowed values.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

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
EVENT_DATASETS: tuple[str, ...] = ("nmnist_sim", "nmnist", "dvs_gesture", "cifar10_dvs")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataParams(_Strict):
    """How the source is split: calibration always comes out of train, test is never touched."""

    calibration_fraction: float = Field(0.02, gt=0, lt=0.5)
    validation_fraction: float = Field(0.1, gt=0, lt=0.5)
    max_train: int | None = Field(None, ge=1)
    max_validation: int | None = Field(None, ge=1)
    max_test: int | None = Field(None, ge=1)
    seed: int = 0


class ModelParams(_Strict):
    """Architecture and neuron model shared by networks D and E."""

    arch: Literal["convnet", "vgg", "resnet"] = "convnet"
    channels: list[int | Literal["M"]] | None = None
    hidden: int = Field(0, ge=0)
    timesteps: int = Field(4, ge=1, le=256)
    beta: float = Field(0.5, ge=0, le=1)
    surrogate_width: float = Field(1.0, gt=0)
    reset: Literal["subtract", "zero"] = "subtract"


class TrainingParams(_Strict):
    """Direct-coded (surrogate-gradient BPTT) training of network D."""

    epochs: int = Field(3, ge=1)
    lr: float = Field(3e-3, gt=0)
    batch_size: int = Field(128, ge=1)
    weight_decay: float = Field(1e-4, ge=0)
    optimizer: Literal["adam", "sgd"] = "adam"
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    shift_augment: int = Field(1, ge=0, le=8)
    seed: int = 0
    device: str = "auto"
    bf16: bool = Field(False, description="bf16 autocast in training and fine-tuning (GPU)")
    progress: bool = True

    @model_validator(mode="after")
    def _device_known(self) -> TrainingParams:
        if self.device != "auto" and not self.device.startswith(("cpu", "cuda", "mps")):
            raise ValueError(
                f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}"
            )
        return self


class CalibrationParams(_Strict):
    """Surrogate-to-spike calibration on the calibration split."""

    max_samples: int = Field(1024, ge=16)
    max_points: int = Field(200_000, ge=1000)


class ThresholdParams(_Strict):
    """Adaptive threshold scaling (``isotonic``) or the robust-normalisation baseline."""

    method: Literal["isotonic", "percentile"] = "isotonic"
    percentile: float = Field(99.9, gt=0, le=100)
    iterations: int = Field(14, ge=1, le=60)


class FinetuneParams(_Strict):
    """Regularised event-driven fine-tuning: ``CE + rate_lambda * mean spike rate``."""

    epochs: int = Field(1, ge=0)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(128, ge=1)
    rate_lambda: float = Field(5.0, ge=0, description="regularisation strength lambda")
    distill: bool = False
    alpha: float = Field(0.4, ge=0, le=1)
    temperature: float = Field(2.0, gt=0)
    max_train: int | None = Field(None, ge=1)
    optimizer: Literal["adam", "sgd"] = "adam"
    schedule: Literal["onecycle", "cosine", "constant"] = "cosine"
    weight_decay: float = Field(0.0, ge=0)


class AblationParams(_Strict):
    """Which ablation rows to run besides the four main ones."""

    enabled: bool = True
    ttfs_rows: bool = False


class TuningParams(_Strict):
    """The Optuna sweep of lambda: validation accuracy of E (max) against energy (min)."""

    enabled: bool = True
    n_trials: int = Field(2, ge=0, description="complete trials the study should hold")
    timeout_s: float | None = Field(None, gt=0, description="time budget of this run's trials")
    lambda_min: float = Field(0.5, gt=0)
    lambda_max: float = Field(50.0, gt=0)
    first_lambdas: list[float] = Field(
        default_factory=list, description="tried first when the study is new, in this order"
    )
    retention_floor: float = Field(0.995, gt=0, le=1)
    storage: str = "sqlite:///data/07_model_output/optuna.db"
    study_name: str | None = Field(None, description="default: <key>-<fingerprint of the setup>")
    max_validation: int | None = Field(2000, ge=1, description="validation samples per trial")
    seed: int = 0

    @model_validator(mode="after")
    def _range(self) -> TuningParams:
        if self.lambda_min >= self.lambda_max:
            raise ValueError(
                f"tuning.lambda_min ({self.lambda_min}) must be below tuning.lambda_max "
                f"({self.lambda_max})"
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

    input_encoding: Literal["rate", "regular", "ttfs", "direct", "frames"] = "rate"
    timesteps: int = Field(4, ge=1, le=256)
    energy_model: str = "per_event"
    calibration: CalibrationParams = CalibrationParams()
    thresholds: ThresholdParams = ThresholdParams()
    finetune: FinetuneParams = FinetuneParams()
    ablation: AblationParams = AblationParams()


class PipelineParams(_Strict):
    """Everything under one dataset key in the parameters."""

    dataset: Literal[DATASET_KEYS]  # type: ignore[valid-type]
    data: DataParams = DataParams()
    model: ModelParams = ModelParams()
    training: TrainingParams = TrainingParams()
    transfer: TransferParams = TransferParams()
    tuning: TuningParams = TuningParams()
    source_model: str | None = Field(
        None,
        description="start from a registered network D (models:/<key>-direct/<version>, "
        "models:/<key>-direct/latest or latest) instead of training one",
    )
    register_models: bool = True

    @model_validator(mode="after")
    def _encoding_fits_data(self) -> PipelineParams:
        events = self.dataset in EVENT_DATASETS
        if events and self.transfer.input_encoding != "frames":
            raise ValueError(
                f"transfer.input_encoding must be 'frames' for the event dataset {self.dataset}"
            )
        if not events and self.transfer.input_encoding == "frames":
            raise ValueError(
                f"transfer.input_encoding 'frames' needs an event dataset; {self.dataset} is "
                "static: use rate, regular, ttfs or direct"
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
        return self

    @property
    def is_event_dataset(self) -> bool:
        return self.dataset in EVENT_DATASETS


class ParameterError(ValueError):
    """Parameters that fail validation; the message lists each bad key and what is allowed."""


def validate_energy_profiles(raw: dict[str, Any], energy_model: str, namespace: str) -> None:
    """The profiles must load and the chosen ``energy_model`` must be one of them."""
    from direct2event.snn.energy import load_profiles

    try:
        profiles = load_profiles(raw)
    except (TypeError, ValueError) as err:
        raise ParameterError(
            f"Invalid energy_profiles (conf/base/parameters_energy.yml): {err}"
        ) from None
    if energy_model not in profiles:
        raise ParameterError(
            f"{namespace}.transfer.energy_model is '{energy_model}', which is not a profile in "
            f"energy_profiles; choose one of {sorted(profiles)} or add it to "
            "conf/base/parameters_energy.yml."
        )


def validate_params(namespace: str, raw: dict[str, Any]) -> PipelineParams:
    """Validate one dataset's parameters, raising :class:`ParameterError` with a readable report."""
    try:
        params = PipelineParams.model_validate(raw)
    except ValidationError as err:
        lines = [
            f"  {namespace}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            + (
                f" (got {e['input']!r})"
                if "input" in e and not isinstance(e["input"], dict)
                else ""
            )
            for e in err.errors()
        ]
        raise ParameterError(
            f"Invalid parameters for dataset '{namespace}' (conf/base/parameters_{namespace}.yml "
            "or --params):\n" + "\n".join(lines)
        ) from None
    if params.dataset != namespace:
        raise ParameterError(
            f"parameters_{namespace}.yml sets dataset: {params.dataset}; it must be '{namespace}'."
        )
    return params
