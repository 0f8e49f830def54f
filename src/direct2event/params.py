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
    progress: bool = True

    @model_validator(mode="after")
    def _device_known(self) -> TrainingParams:
        if self.device != "auto" and not self.device.startswith(("cpu", "cuda", "mps")):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        return self


class PipelineParams(_Strict):
    """Everything under one dataset key in the parameters."""

    dataset: Literal[DATASET_KEYS]  # type: ignore[valid-type]
    data: DataParams = DataParams()
    model: ModelParams = ModelParams()
    training: TrainingParams = TrainingParams()

    @property
    def is_event_dataset(self) -> bool:
        return self.dataset in EVENT_DATASETS


class ParameterError(ValueError):
    """Parameters that fail validation; the message lists each bad key and what is allowed."""


def validate_params(namespace: str, raw: dict[str, Any]) -> PipelineParams:
    """Validate one dataset's parameters, raising :class:`ParameterError` with a readable report."""
    try:
        params = PipelineParams.model_validate(raw)
    except ValidationError as err:
        lines = [
            f"  {namespace}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            + (f" (got {e['input']!r})" if "input" in e and not isinstance(e["input"], dict) else "")
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
