"""Parameters of the shift benchmark: shifts, severities, online adaptation, the stream test."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from direct2event.data.event_filters import EventFront
from direct2event.data.event_shifts import EVENT_SEVERITIES, EVENT_SHIFTS, probe_event_shift
from direct2event.glue.params.base import Strict, default_of
from direct2event.snn.adaptation import ADAPTATION_METHODS, METHODS, AdaptationConfig, StreamConfig
from direct2event.snn.calibration import MIN_CALIBRATION_SAMPLES
from direct2event.snn.shifts import (
    IMAGE_SEVERITIES,
    IMAGE_SHIFTS,
    load_function,
    probe_image_shift,
)


class AdaptationParams(Strict):
    """Online threshold adaptation of E (direct2event.snn.adaptation), compared in the stage."""

    methods: list[str] = Field(
        default_factory=lambda: list(ADAPTATION_METHODS),
        description="registered adaptation methods (direct2event.snn.adaptation): modulation "
        "(current statistics), homeostasis (firing rates), budgeted (modulation with the "
        "firing rates held to the calibrated ones)",
    )
    momentum: float = Field(
        default_of(AdaptationConfig, "momentum"),
        ge=0,
        lt=1,
        description="per sample; time constant ~ 1/(1-momentum) samples",
    )
    step: float = Field(
        default_of(AdaptationConfig, "step"),
        ge=0,
        le=1,
        description="homeostasis: share of the rate error corrected per sample",
    )
    max_gain: float = Field(
        default_of(AdaptationConfig, "max_gain"),
        ge=1,
        description="bound of the gain / threshold factor",
    )
    budget_step: float = Field(
        default_of(AdaptationConfig, "budget_step"),
        ge=0,
        le=1,
        description="budgeted: share of the residual rate error corrected per sample",
    )
    budget_release: float | None = Field(
        default_of(AdaptationConfig, "budget_release"),
        ge=0,
        le=1,
        description="budgeted: the same, back toward the calibrated threshold once under the "
        "budget (the budget is a ceiling); null: a set point, moved both ways at budget_step",
    )
    budget_momentum: float = Field(
        default_of(AdaptationConfig, "budget_momentum"),
        ge=0,
        lt=1,
        description="budgeted: momentum per sample of the rate its controller reads (a short "
        "lag keeps the controller from overshooting)",
    )
    noise_band: float = Field(
        default_of(AdaptationConfig, "noise_band"),
        ge=0,
        description="budgeted: a running statistic within this many standard errors of its "
        "calibrated value (its noise on clean data) is left uncorrected, so a clean E stays as "
        "it was chosen; 0: every deviation corrected",
    )
    batch_size: int | None = Field(
        None,
        ge=1,
        description="samples per adaptation update in the table (default: E's "
        "evaluation batch; small batches run several times slower per sample on a CPU)",
    )
    warmup: int = Field(
        100, ge=0, description="unlabelled shifted samples adapted on before the table's samples"
    )
    scope: Literal["all", "middle"] = Field(
        "all",
        description="the severities the methods run at: all (their severity curves and "
        "corruption errors) or each shift's middle one, where their targets are measured (the "
        "methods are most of the table's network passes: middle runs a third of them)",
    )

    @model_validator(mode="after")
    def _known_methods(self) -> AdaptationParams:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(
                f"shift.adaptation.methods {unknown} are not registered adaptation methods; "
                f"use {sorted(METHODS)} or register one (direct2event.snn.adaptation.register)"
            )
        return self

    def config(self, method: str) -> AdaptationConfig:
        return AdaptationConfig(
            method,
            self.momentum,
            self.step,
            self.max_gain,
            self.budget_step,
            self.budget_release,
            self.budget_momentum,
            self.noise_band,
        )


class FrontParams(Strict):
    """Event data: the clean front (hot pixels, then background activity removed before E),
    measured as a baseline alone and with each adaptation method on the qualifying shifts."""

    enabled: bool = True
    hot_pixel_hz: float = Field(
        default_of(EventFront, "hot_pixel_hz"),
        gt=0,
        description="a pixel firing above this rate over a recording is dropped",
    )
    filter_time_us: float = Field(
        default_of(EventFront, "filter_time_us"),
        gt=0,
        description="an event is kept when a 4-neighbour fired within this time before it",
    )

    budget_tolerance: float | None = Field(
        default_of(EventFront, "budget_tolerance"),
        ge=0,
        description="the front holds the events it passes within this share above what a clean "
        "recording passes, narrowing its window under added activity (never below "
        "min_filter_time_us); null: a fixed window",
    )
    min_filter_time_us: float = Field(
        default_of(EventFront, "min_filter_time_us"),
        gt=0,
        description="the narrowest window the event budget may set",
    )

    @model_validator(mode="after")
    def _window(self) -> FrontParams:
        if self.min_filter_time_us > self.filter_time_us:
            raise ValueError(
                f"shift.front.min_filter_time_us ({self.min_filter_time_us}) must not exceed "
                f"shift.front.filter_time_us ({self.filter_time_us})"
            )
        return self

    def make(self) -> EventFront:
        return EventFront(
            self.hot_pixel_hz,
            self.filter_time_us,
            self.budget_tolerance,
            self.min_filter_time_us,
        )


class CustomShift(Strict):
    """A user's shift: ``package.module:function`` with the signature of the built-ins."""

    function: str = Field(description="import path package.module:function")
    severities: list[float] = Field(min_length=1)


class StreamParams(Strict):
    """The stream test: clean, then an abrupt shift, then clean again, sample by sample."""

    shift: str | None = Field(
        None, description="default: the shift that costs E most at its middle severity"
    )
    segment: int = Field(
        400,
        ge=10,
        description="samples per segment (longer than the recovery it measures: an image "
        "dataset's stream has its own samples; event data use the table's, a third each)",
    )
    held_out: int = Field(150, ge=10, description="held-out samples each checkpoint is scored on")
    checkpoint_every: int = Field(default_of(StreamConfig, "checkpoint_every"), ge=1)
    window: int = Field(
        default_of(StreamConfig, "window"),
        ge=1,
        description="sliding window of the online accuracy",
    )
    tolerance: float = Field(
        default_of(StreamConfig, "tolerance"),
        gt=0,
        description="recovered: within this of the plateau, or within the plateau's binomial "
        "standard error on the held-out samples where that is wider",
    )

    def config(self, seed: int) -> StreamConfig:
        """The library's stream test settings, with the run's seed."""
        return StreamConfig(self.checkpoint_every, self.window, self.tolerance, seed)


class ShiftParams(Strict):
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
        description="clean calibration-set sizes of the conversion baseline (a size at or "
        "above the run's own calibration set is the run's own conversion)",
    )
    recalibration_samples: int = Field(
        128, ge=MIN_CALIBRATION_SAMPLES, description="unlabelled shifted samples to recalibrate"
    )
    adaptation: AdaptationParams = AdaptationParams()
    stream: StreamParams = StreamParams()
    front: FrontParams = FrontParams()

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
        if self.enabled:  # a user's shift tried on 2 samples now, not after every built-in one
            probe = probe_event_shift if events else probe_image_shift
            for name, custom in self.custom.items():
                try:
                    probe(load_function(custom.function), custom.severities, name)
                except ValueError as err:
                    raise ValueError(f"shift.custom.{name}: {err}") from None
