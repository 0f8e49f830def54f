"""Online threshold adaptation of network E at inference: no labels, no gradients.

E's per-channel thresholds are fixed at calibration, on a small clean sample. A shifted input
(noise, lower contrast, dropped events) moves the input currents of every LIF layer, and fixed
thresholds then pass too many spikes or too few. An adaptation method steers them back while E
runs, sample by sample on a stream or batch by batch: it sees each LIF layer's input current
before the layer (and may change it: a gain and a bias are a threshold and a bias current the
layer could hold) and its spikes after it.

A method is one class (:class:`AdaptationMethod`) registered by name (:func:`register`); the
pipeline runs every name in ``shift.adaptation.methods``. ``momentum`` is per sample: running
statistics keep ``momentum`` of their value with every sample, so a batch of ``B`` counts as
``B`` samples and batch size does not change the time constant (about ``1 / (1 - momentum)``
samples). Statistics start at the calibrated reference, so on the calibration distribution
every method stays near the identity.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from direct2event.snn.encoders import INTENSITY_ENCODINGS, InputCoding
from direct2event.snn.models import SpikingNet
from direct2event.snn.neurons import LIF
from direct2event.snn.training import Split, as_float, encoded_batches

EPS = 1e-6
SILENT_RATE = 1e-4  # channels that (almost) never fire on clean data are not steered


@dataclass(frozen=True)
class AdaptationConfig:
    """One online adaptation method (a registered name) and its knobs."""

    method: str
    momentum: float = 0.99  # per sample; time constant ~ 1 / (1 - momentum) samples
    step: float = 0.005  # homeostasis: share of a log-rate error corrected per sample
    max_gain: float = 4.0  # bound of a gain or threshold factor
    budget_step: float = 0.01  # budgeted: share of a log-rate error corrected per sample
    budget_release: float | None = 0.05  # budgeted: the same, back toward 1 under the budget
    budget_momentum: float = 0.95  # budgeted: per sample, of the rate its controller reads
    noise_band: float = 2.0  # budgeted: deviations within this many standard errors are noise

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(
                f"Unknown adaptation method '{self.method}'; use one of {sorted(METHODS)}."
            )
        if self.noise_band < 0:
            raise ValueError(f"noise_band must be >= 0 standard errors, got {self.noise_band}.")
        for name in ("momentum", "budget_momentum"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}.")
        steps = (
            self.step,
            self.budget_step,
            0.0 if self.budget_release is None else self.budget_release,
        )
        if not all(0 <= x <= 1 for x in steps) or self.max_gain < 1:
            raise ValueError(
                "step, budget_step and budget_release must be in [0, 1] and max_gain >= 1, got "
                f"{self.step}, {self.budget_step}, {self.budget_release}, {self.max_gain}."
            )


@dataclass
class LayerReference:
    """Per-channel statistics of one LIF layer of E on the clean calibration sample."""

    mean: Tensor  # input current, over steps, samples and positions
    std: Tensor
    rate: Tensor  # spikes per neuron and step
    # How much one clean sample's per-channel mean current, mean square current and rate vary
    # from sample to sample (their std over the calibration samples), and how many samples the
    # reference holds: what tells a running statistic's noise from a shift (:meth:`noise`).
    mean_spread: Tensor | None = None
    square_spread: Tensor | None = None
    rate_spread: Tensor | None = None
    samples: int = 0

    @property
    def active(self) -> Tensor:
        """Channels that fire on clean data (the others are not steered)."""
        return self.rate > SILENT_RATE

    def noise(self, spread: Tensor | None, momentum: float) -> Tensor | float:
        """The standard error of a running average (``momentum`` per sample) of a per-sample
        statistic with sample-to-sample ``spread``, set against this reference's mean of the
        same statistic on clean data: ``spread * sqrt((1 - m) / (1 + m) + 1 / samples)`` (the
        running average's variance and the reference's own). 0 without a recorded spread."""
        if spread is None or self.samples < 2:
            return 0.0
        return spread * ((1.0 - momentum) / (1.0 + momentum) + 1.0 / self.samples) ** 0.5


def within_noise(deviation: Tensor, noise: Tensor | float, band: float) -> Tensor:
    """``deviation`` with ``band`` standard errors (``noise``) taken off its size, 0 within
    them: a clean stream's running statistics wander from the reference by their noise, and a
    method that corrects that wandering changes a clean E for nothing (soft thresholding)."""
    if band == 0:
        return deviation
    return torch.sign(deviation) * torch.clamp(deviation.abs() - band * noise, min=0.0)


def per_sample(x: Tensor) -> Tensor:
    """``[T, B, C, ...]`` -> ``[B, C]`` mean over steps and positions (a view, no copy: the
    online methods call it on every batch of every layer)."""
    return x.reshape(*x.shape[:3], -1).mean(dim=(0, 3))


def per_sample_double(x: Tensor) -> Tensor:
    """:func:`per_sample` of a current or spikes, taken in their own precision (float32 sums
    over steps and positions are exact to ~1e-7, and 10x faster than a float64 copy of the
    whole tensor) and returned in float64 on the CPU, where running averages accumulate."""
    return per_sample(x.detach()).double().cpu()


def ema(running: Tensor, values: Tensor, momentum: float) -> Tensor:
    """Running value after the samples ``values[0], values[1], ...`` one after another."""
    b = values.shape[0]
    powers = momentum ** torch.arange(b - 1, -1, -1, dtype=values.dtype, device=values.device)
    return momentum**b * running + (1.0 - momentum) * (powers[:, None] * values).sum(0)


def channel_view(v: Tensor, x: Tensor) -> Tensor:
    """``[C]`` -> broadcastable against ``[T, B, C, ...]``."""
    return v.view(1, 1, -1, *([1] * (x.dim() - 3))).to(device=x.device, dtype=x.dtype)


@torch.no_grad()
def reference_statistics(
    model: SpikingNet,
    data: Split,
    coding: InputCoding,
    device: torch.device,
    seed: int = 0,
) -> list[LayerReference]:
    """Mean and std of every LIF layer's input current and its firing rate, per channel, on
    ``data`` (the clean calibration sample): what the adaptation steers back to."""
    model.to(device).eval()
    layers = model.lif_layers()
    sums = [_Moments() for _ in layers]
    handles = []
    for i, layer in enumerate(layers):

        def pre(_m: LIF, inp: tuple[Tensor, ...], i: int = i) -> None:
            x = inp[0].double()
            sums[i].add("mean", per_sample(x))
            sums[i].add("square", per_sample(x * x))
            sums[i].n += x.shape[1]

        def post(_m: LIF, _inp: tuple[Tensor, ...], out: Tensor, i: int = i) -> None:
            sums[i].add("rate", per_sample(out.double()))

        handles += [layer.register_forward_pre_hook(pre), layer.register_forward_hook(post)]
    try:
        for _, inputs in encoded_batches(data, coding, device, seed=seed):
            model(inputs)
    finally:
        for h in handles:
            h.remove()
    if sums and sums[0].n == 0:
        raise ValueError("reference_statistics needs at least one calibration sample.")
    return [m.reference() for m in sums]


class _Moments:
    """Per channel, the sums over samples of per-sample statistics and of their squares."""

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.squares: dict[str, Tensor] = {}
        self.n = 0

    def add(self, name: str, per_sample_values: Tensor) -> None:
        v = per_sample_values.double()
        self.sums[name] = self.sums.get(name, 0.0) + v.sum(0)
        self.squares[name] = self.squares.get(name, 0.0) + (v * v).sum(0)

    def average(self, name: str) -> Tensor:
        return self.sums[name] / self.n

    def spread(self, name: str) -> Tensor:
        mean = self.average(name)
        return torch.sqrt(torch.clamp(self.squares[name] / self.n - mean * mean, min=0.0))

    def reference(self, rate: str = "rate") -> LayerReference:
        mean = self.average("mean")
        std = torch.sqrt(torch.clamp(self.average("square") - mean * mean, min=0.0))
        per_channel = [mean, std, self.average(rate)]
        spreads = [self.spread("mean"), self.spread("square"), self.spread(rate)]
        return LayerReference(*(t.float().cpu() for t in per_channel + spreads), samples=self.n)


def input_statistics(data: Split, coding: InputCoding) -> LayerReference | None:
    """Per input channel, the mean and std of the intensities an encoder turns into events on
    ``data`` (the clean calibration sample), and their mean as the rate (expected events per
    position and step): what a method that adapts the encoder steers back to. None where the
    input is not encoded from intensities (analog input, or events from a sensor)."""
    if coding.encoding not in INTENSITY_ENCODINGS or len(data) == 0:
        return None
    x = as_float(data.x).double().unsqueeze(0)  # one step: [1, B, C, ...]
    moments = _Moments()
    moments.add("mean", per_sample(x))
    moments.add("square", per_sample(x * x))
    moments.n = x.shape[1]
    return moments.reference(rate="mean")


class AdaptationMethod:
    """One label-free, gradient-free adaptation method: per-layer state started at the clean
    reference, what it does to a layer's input current before the LIF (:meth:`pre`: a gain and
    a bias per channel), what it learns from the layer's spikes (:meth:`post`), and the
    per-channel thresholds and bias currents a chip would hold to behave as the adapted network
    (:meth:`effective_thresholds`). A subclass sets ``name`` and is made known by
    :func:`register`."""

    name: ClassVar[str] = ""
    adapts_input: ClassVar[bool] = False  # whether it also steers the input encoder

    def __init__(
        self,
        reference: list[LayerReference],
        config: AdaptationConfig,
        input_reference: LayerReference | None = None,
    ) -> None:
        self.reference, self.config = reference, config
        self.input_reference = input_reference if self.adapts_input else None
        self.reset()

    def reset(self) -> None:
        """Back to the calibrated state."""
        self.state: list[dict[str, Tensor]] = [self.initial(ref) for ref in self.reference]
        ref = self.input_reference
        self.input_state: dict[str, Tensor] = {} if ref is None else self.initial(ref)

    def adapt_input(self, x: Tensor, frozen: bool) -> Tensor:
        """The intensities ``[B, C, ...]`` the encoder is driven by (identity by default)."""
        return x

    def input_gain_bias(self) -> tuple[Tensor, Tensor] | None:
        """The encoder's gain and bias now (an integrate-and-fire encoder's threshold
        ``1 / gain`` and bias ``bias / gain``); None when the method leaves it alone."""
        return None

    def initial(self, ref: LayerReference) -> dict[str, Tensor]:
        """One layer's state on the calibration distribution."""
        return {}

    def gain_bias(self, i: int) -> tuple[Tensor, Tensor]:
        """Layer ``i``'s current, as the method sets it now: ``x' = gain * x + bias``."""
        ref = self.reference[i]
        return torch.ones_like(ref.mean), torch.zeros_like(ref.mean)

    def observe_input(self, i: int, x: Tensor) -> None:
        """Learn from layer ``i``'s input current ``[T, B, C, ...]`` (before the gain)."""

    def observe_output(self, i: int, spikes: Tensor) -> None:
        """Learn from layer ``i``'s spikes ``[T, B, C, ...]``."""

    def pre(self, i: int, x: Tensor, frozen: bool) -> Tensor:
        if not frozen:
            self.observe_input(i, x)
        gain, bias = self.gain_bias(i)
        return torch.addcmul(channel_view(bias, x), x, channel_view(gain, x))  # one pass

    def post(self, i: int, spikes: Tensor, frozen: bool) -> None:
        if not frozen:
            self.observe_output(i, spikes)

    def effective_thresholds(self, thresholds: list[Tensor]) -> list[tuple[Tensor, Tensor]]:
        """Per layer: the thresholds and constant bias currents (per step) that make a fixed
        network behave as the adapted one now. For a LIF with reset by subtraction a gain ``g``
        and bias ``b`` on the current are a threshold ``theta / g`` and a bias ``b / g``."""
        out = []
        for i, theta in enumerate(thresholds):
            gain, bias = self.gain_bias(i)
            out.append((theta / gain, bias / gain))
        return out

    def snapshot(self) -> list[dict[str, Tensor]]:
        return [{k: v.clone() for k, v in s.items()} for s in [*self.state, self.input_state]]

    def restore(self, snap: list[dict[str, Tensor]]) -> None:
        *layers, inputs = [{k: v.clone() for k, v in s.items()} for s in snap]
        self.state, self.input_state = layers, inputs


METHODS: dict[str, type[AdaptationMethod]] = {}


def register(cls: type[AdaptationMethod]) -> type[AdaptationMethod]:
    """Make an adaptation method known by its ``name`` (a class decorator)."""
    if not cls.name or cls.name in METHODS:
        raise ValueError(f"adaptation method {cls.__name__} needs a new, non-empty name")
    METHODS[cls.name] = cls
    return cls


class OnlineAdaptation:
    """Adapts E's LIF layers with one method while E runs inside ``with OnlineAdaptation(...)``.

    ``frozen = True`` keeps the current state without updating it (to evaluate a snapshot).
    With ``input_reference`` (:func:`input_statistics`), a method that adapts the encoder does so
    through :meth:`coding`, the input coding to run E with.
    """

    def __init__(
        self,
        model: SpikingNet,
        reference: list[LayerReference],
        config: AdaptationConfig,
        input_reference: LayerReference | None = None,
    ) -> None:
        self.model, self.reference, self.config = model, reference, config
        self.layers = model.lif_layers()
        if len(self.layers) != len(reference):
            raise ValueError(
                f"The reference holds {len(reference)} layers but the network has "
                f"{len(self.layers)} LIF layers: record it on this network."
            )
        self.method = METHODS[config.method](reference, config, input_reference)
        self.frozen = False
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def reset(self) -> None:
        self.method.reset()

    def snapshot(self) -> Any:
        return self.method.snapshot()

    def restore(self, snap: Any) -> None:
        self.method.restore(snap)

    def effective_thresholds(self) -> list[tuple[Tensor, Tensor]]:
        """Per layer: the thresholds and bias currents a chip would hold (see the method)."""
        thetas = [layer.threshold.detach().cpu().flatten() for layer in self.layers]
        return self.method.effective_thresholds(thetas)

    def coding(self, coding: InputCoding) -> InputCoding:
        """``coding`` with the method's encoder adaptation (unchanged when it has none)."""
        if self.method.input_reference is None or coding.encoding not in INTENSITY_ENCODINGS:
            return coding

        def adapter(x: Tensor) -> Tensor:
            return self.method.adapt_input(x, self.frozen)

        return InputCoding(coding.encoding, coding.timesteps, adapter)

    def _pre(self, i: int) -> Callable[[LIF, tuple[Tensor, ...]], tuple[Tensor]]:
        def hook(_m: LIF, inp: tuple[Tensor, ...]) -> tuple[Tensor]:
            return (self.method.pre(i, inp[0], self.frozen),)

        return hook

    def _post(self, i: int) -> Callable[[LIF, tuple[Tensor, ...], Tensor], None]:
        def hook(_m: LIF, _inp: tuple[Tensor, ...], out: Tensor) -> None:
            self.method.post(i, out, self.frozen)

        return hook

    def __enter__(self) -> OnlineAdaptation:
        for i, layer in enumerate(self.layers):
            self._handles.append(layer.register_forward_pre_hook(self._pre(i)))
            self._handles.append(layer.register_forward_hook(self._post(i)))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


@contextmanager
def frozen(adaptation: OnlineAdaptation | None) -> Iterator[None]:
    """Evaluate the current state without moving it."""
    if adaptation is None:
        yield
        return
    before, adaptation.frozen = adaptation.frozen, True
    try:
        yield
    finally:
        adaptation.frozen = before
