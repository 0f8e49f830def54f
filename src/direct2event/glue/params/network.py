"""Parameters of the networks and the transfer: data splits, architecture, D's training,
calibration, threshold scaling, E's fine-tuning and the ablation."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from direct2event.glue.params.base import Strict, default_of
from direct2event.snn.calibration import MIN_CALIBRATION_SAMPLES
from direct2event.snn.finetuning import FinetuneConfig
from direct2event.snn.thresholds import ThresholdConfig
from direct2event.snn.training import FitConfig


class DataParams(Strict):
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


class ModelParams(Strict):
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


class TrainingParams(Strict):
    """Direct-coded (surrogate-gradient BPTT) training of network D."""

    epochs: int = Field(4, ge=1)
    lr: float = Field(3e-3, gt=0)
    batch_size: int = Field(128, ge=1)
    weight_decay: float = Field(1e-4, ge=0)  # D's own: the library's default is none
    optimizer: Literal["adam", "sgd"] = default_of(FitConfig, "optimizer")
    schedule: Literal["onecycle", "cosine", "constant"] = default_of(FitConfig, "schedule")
    shift_augment: int = Field(1, ge=0, le=8, description="random shifts of up to N pixels")
    device: str = Field("auto", description="auto = CUDA when present, else CPU")
    bf16: bool = Field(
        default_of(FitConfig, "bf16"),
        description="bf16 autocast in training and fine-tuning (GPU)",
    )
    progress: bool = default_of(FitConfig, "progress")
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


class CalibrationParams(Strict):
    """Surrogate-to-spike calibration on the calibration split."""

    max_samples: int = Field(
        1024, ge=MIN_CALIBRATION_SAMPLES, description="calibration samples used"
    )
    max_points: int = Field(200_000, ge=1000, description="(activation, rate) pairs per layer")


class ThresholdParams(Strict):
    """Adaptive threshold scaling (``isotonic``) or the robust-normalisation baseline."""

    method: Literal["isotonic", "percentile"] = default_of(ThresholdConfig, "method")
    percentile: float = Field(default_of(ThresholdConfig, "percentile"), gt=0, le=100)
    iterations: int = Field(
        default_of(ThresholdConfig, "iterations"),
        ge=1,
        le=60,
        description="bisection steps on log(theta)",
    )

    def config(self) -> ThresholdConfig:
        """The library's threshold settings."""
        return ThresholdConfig(self.method, self.percentile, self.iterations)


class FinetuneParams(Strict):
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
    distill: bool = Field(
        default_of(FinetuneConfig, "distill"),
        description="alpha*CE + (1-alpha)*KL(D || E), D frozen",
    )
    alpha: float = Field(default_of(FinetuneConfig, "alpha"), ge=0, le=1)
    temperature: float = Field(default_of(FinetuneConfig, "temperature"), gt=0)
    max_train: int | None = Field(
        default_of(FinetuneConfig, "max_train"),
        ge=1,
        description="training samples per fine-tuning",
    )
    train_thresholds: bool = Field(
        default_of(FinetuneConfig, "train_thresholds"),
        description="train E's per-channel thresholds with the weights (kept positive)",
    )
    penalty: Literal["rate", "energy"] = Field(
        "rate",
        description="rate: every spike costs the same; energy: each layer's spikes priced by "
        "what transfer.energy_model charges them (their fan-out, memory traffic), normalised "
        "so that lambda keeps its scale",
    )
    penalty_model: str | None = Field(
        None,
        description="the energy profile the energy penalty prices spikes by (null: "
        "transfer.energy_model)",
    )
    optimizer: Literal["adam", "sgd"] = default_of(FitConfig, "optimizer")
    schedule: Literal["onecycle", "cosine", "constant"] = "cosine"  # E's own: not D's onecycle
    weight_decay: float = Field(default_of(FitConfig, "weight_decay"), ge=0)


class AblationParams(Strict):
    """Which ablation rows to run besides the four main ones."""

    enabled: bool = True
    ttfs_rows: bool = False


class TransferParams(Strict):
    """Everything from network D to network E."""

    input_encoding: Literal["rate", "regular", "ttfs", "analog", "frames"] = Field(
        "regular",
        description="E's input: rate | regular | ttfs | analog (hybrid: first layer MACs) | "
        "frames (event datasets)",
    )
    timesteps: int = Field(3, ge=1, le=256, description="T of network E")
    energy_model: str = Field("per_event", description="a profile of energy_profiles")
    neurobench_samples: int | None = Field(
        2000,
        ge=1,
        description="test samples NeuroBench's metrics are computed on (the first ones; null: "
        "all): its per-sample figures settle long before, and it runs each layer twice more",
    )
    calibration: CalibrationParams = CalibrationParams()
    thresholds: ThresholdParams = ThresholdParams()
    finetune: FinetuneParams = FinetuneParams()
    ablation: AblationParams = AblationParams()
