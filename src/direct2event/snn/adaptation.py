"""Online threshold adaptation of network E at inference: no labels, no gradients.

E's per-channel thresholds are fixed at calibration, on a small clean sample. A shifted input
(noise, lower contrast, dropped events) moves the input currents of every LIF layer, and fixed
thresholds then pass too many spikes or too few. Two label-free methods steer them back while E
runs, sample by sample on a stream or batch by batch:

``modulation``
    Threshold modulation (after arXiv 2505.05375): running per-channel mean and standard
    deviation of each LIF layer's input current are set against those recorded on the clean
    calibration sample, and the current is renormalised, ``x' = (x - mu_run) * g + mu_ref`` with
    ``g = sigma_ref / sigma_run``. For a LIF with reset by subtraction this is exactly a threshold
    ``theta / g`` plus a constant bias current ``(mu_ref - g mu_run) / g`` per channel
    (:meth:`OnlineAdaptation.effective_thresholds`), so a chip with per-channel thresholds and
    biases can run it.
``homeostasis``
    Rate homeostasis: each channel's running firing rate is steered back to its calibrated rate by
    a multiplicative threshold update, ``log k += step * log(r_run / r_ref)`` per sample,
    threshold ``k * theta``. It keeps E's events (and energy) near their budget.

``momentum`` is per sample: the running statistics keep ``momentum`` of their value with every
sample, so a batch of ``B`` counts as ``B`` samples and batch size does not change the time
constant (about ``1 / (1 - momentum)`` samples). Statistics start at the calibrated reference,
so on the calibration distribution both methods stay near the identity.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from direct2event.snn.encoders import InputCoding
from direct2event.snn.models import SpikingNet
from direct2event.snn.neurons import LIF
from direct2event.snn.training import Split, encoded_batches

Method = Literal["modulation", "homeostasis"]
ADAPTATION_METHODS: tuple[str, ...] = ("modulation", "homeostasis")
_EPS = 1e-6
_SILENT_RATE = 1e-4  # channels that (almost) never fire on clean data are not steered


@dataclass(frozen=True)
class AdaptationConfig:
    """One online adaptation method and its two knobs."""

    method: Method
    momentum: float = 0.99  # per sample; time constant ~ 1 / (1 - momentum) samples
    step: float = 0.005  # homeostasis: share of the log-rate error corrected per sample
    max_gain: float = 4.0  # bound of the gain (modulation) and threshold factor (homeostasis)

    def __post_init__(self) -> None:
        if self.method not in ADAPTATION_METHODS:
            raise ValueError(
                f"Unknown adaptation method '{self.method}'; use one of {ADAPTATION_METHODS}."
            )
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}.")
        if not 0 <= self.step <= 1 or self.max_gain < 1:
            raise ValueError(
                f"step must be in [0, 1] and max_gain >= 1, got {self.step}, {self.max_gain}."
            )


@dataclass
class LayerReference:
    """Per-channel statistics of one LIF layer of E on the clean calibration sample."""

    mean: Tensor  # input current, over steps, samples and positions
    std: Tensor
    rate: Tensor  # spikes per neuron and step


def _per_sample(x: Tensor) -> Tensor:
    """``[T, B, C, ...]`` -> ``[B, C]`` mean over steps and positions."""
    t, b, c = x.shape[:3]
    return x.transpose(0, 1).reshape(b, t, c, -1).mean(dim=(1, 3))


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
    sums = [[0.0, 0.0, 0.0, 0] for _ in layers]
    handles = []
    for i, layer in enumerate(layers):

        def pre(_m: LIF, inp: tuple[Tensor, ...], i: int = i) -> None:
            x = inp[0].double()
            sums[i][0] = sums[i][0] + _per_sample(x).sum(0)
            sums[i][1] = sums[i][1] + _per_sample(x * x).sum(0)
            sums[i][3] += x.shape[1]

        def post(_m: LIF, _inp: tuple[Tensor, ...], out: Tensor, i: int = i) -> None:
            sums[i][2] = sums[i][2] + _per_sample(out.double()).sum(0)

        handles += [layer.register_forward_pre_hook(pre), layer.register_forward_hook(post)]
    try:
        for _, inputs in encoded_batches(data, coding, device, seed=seed):
            model(inputs)
    finally:
        for h in handles:
            h.remove()
    refs = []
    for s1, s2, rate, n in sums:
        if n == 0:
            raise ValueError("reference_statistics needs at least one calibration sample.")
        mean = s1 / n
        std = torch.sqrt(torch.clamp(s2 / n - mean * mean, min=0.0))
        refs.append(LayerReference(mean.float().cpu(), std.float().cpu(), (rate / n).float().cpu()))
    return refs


def _ema(running: Tensor, per_sample: Tensor, momentum: float) -> Tensor:
    """Running value after the samples ``per_sample[0], per_sample[1], ...`` one after another."""
    b = per_sample.shape[0]
    powers = momentum ** torch.arange(
        b - 1, -1, -1, dtype=per_sample.dtype, device=per_sample.device
    )
    return momentum**b * running + (1.0 - momentum) * (powers[:, None] * per_sample).sum(0)


def _channel_view(v: Tensor, x: Tensor) -> Tensor:
    """``[C]`` -> broadcastable against ``[T, B, C, ...]``."""
    return v.view(1, 1, -1, *([1] * (x.dim() - 3))).to(device=x.device, dtype=x.dtype)


@dataclass
class _LayerState:
    ref: LayerReference
    mean: Tensor  # running first moment of the current
    square: Tensor  # running second moment
    rate: Tensor  # running firing rate
    log_factor: Tensor  # homeostasis: log of the threshold factor k
    active: Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.active = self.ref.rate > _SILENT_RATE


class OnlineAdaptation:
    """Adapts E's LIF layers while E runs inside ``with OnlineAdaptation(...)``.

    ``frozen = True`` keeps the current state without updating it (to evaluate a snapshot).
    """

    def __init__(
        self, model: SpikingNet, reference: list[LayerReference], config: AdaptationConfig
    ) -> None:
        self.model, self.reference, self.config = model, reference, config
        self.layers = model.lif_layers()
        if len(self.layers) != len(reference):
            raise ValueError(
                f"The reference holds {len(reference)} layers but the network has "
                f"{len(self.layers)} LIF layers: record it on this network."
            )
        self.frozen = False
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self.reset()

    def reset(self) -> None:
        """Back to the calibrated state (the running statistics equal the reference)."""
        self.states = [
            _LayerState(
                ref,
                ref.mean.clone(),
                ref.std**2 + ref.mean**2,
                ref.rate.clone(),
                torch.zeros_like(ref.rate),
            )
            for ref in self.reference
        ]

    def snapshot(self) -> list[tuple[Tensor, ...]]:
        return [
            (s.mean.clone(), s.square.clone(), s.rate.clone(), s.log_factor.clone())
            for s in self.states
        ]

    def restore(self, snap: list[tuple[Tensor, ...]]) -> None:
        for s, (mean, square, rate, log_factor) in zip(self.states, snap, strict=True):
            s.mean, s.square, s.rate, s.log_factor = (
                mean.clone(),
                square.clone(),
                rate.clone(),
                log_factor.clone(),
            )

    def _gain_bias(self, s: _LayerState) -> tuple[Tensor, Tensor]:
        """Modulation's per-channel gain and offset: ``x' = g x + b``."""
        std = torch.sqrt(torch.clamp(s.square - s.mean**2, min=0.0))
        c = self.config
        gain = (s.ref.std / std.clamp(min=_EPS)).clamp(1.0 / c.max_gain, c.max_gain)
        gain = torch.where(s.ref.std > _EPS, gain, torch.ones_like(gain))
        return gain, s.ref.mean - gain * s.mean

    def effective_thresholds(self) -> list[tuple[Tensor, Tensor]]:
        """Per layer: the thresholds and constant bias currents (per step) that make a fixed
        network behave as the adapted one now (for hardware with per-channel thresholds)."""
        out = []
        for layer, s in zip(self.layers, self.states, strict=True):
            theta = layer.threshold.detach().cpu().flatten()
            if self.config.method == "modulation":
                gain, bias = self._gain_bias(s)
                out.append((theta / gain, bias / gain))
            else:
                out.append((theta * torch.exp(s.log_factor), torch.zeros_like(theta)))
        return out

    def _pre(self, i: int):
        def hook(_m: LIF, inp: tuple[Tensor, ...]) -> tuple[Tensor]:
            x = inp[0]
            s, m = self.states[i], self.config.momentum
            if self.config.method == "modulation":
                if not self.frozen:
                    xd = x.detach().double().cpu()
                    s.mean = _ema(s.mean.double(), _per_sample(xd), m).float()
                    s.square = _ema(s.square.double(), _per_sample(xd * xd), m).float()
                gain, bias = self._gain_bias(s)
                return (x * _channel_view(gain, x) + _channel_view(bias, x),)
            return (x * _channel_view(torch.exp(-s.log_factor), x),)  # threshold k * theta

        return hook

    def _post(self, i: int):
        def hook(_m: LIF, _inp: tuple[Tensor, ...], out: Tensor) -> None:
            if self.frozen or self.config.method != "homeostasis":
                return
            s, c = self.states[i], self.config
            rates = _per_sample(out.detach().double().cpu())
            s.rate = _ema(s.rate.double(), rates, c.momentum).float()
            error = torch.log((s.rate + _EPS) / (s.ref.rate + _EPS))
            # ``step`` of the error corrected per sample, compounded over the batch: a batch of B
            # corrects 1 - (1 - step)^B of it (never more than all of it, so large batches
            # stay stable although they see the new threshold only at the next batch)
            fraction = 1.0 - (1.0 - c.step) ** rates.shape[0]
            step = fraction * torch.where(s.active, error, torch.zeros_like(error))
            limit = math.log(c.max_gain)
            s.log_factor = (s.log_factor + step).clamp(-limit, limit)

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


def plateau(accuracy: list[float], fraction: float = 1.0 / 3.0) -> float:
    """The level a trace settles at: its mean over the last ``fraction`` of the points."""
    if not accuracy:
        raise ValueError("plateau of an empty trace.")
    n = max(1, round(len(accuracy) * fraction))
    return float(sum(accuracy[-n:]) / n)


def recovery_samples(
    positions: list[int], accuracy: list[float], target: float, tolerance: float = 0.01
) -> int | None:
    """Samples after the change until the trace comes within ``tolerance`` of ``target`` and
    stays there (the first position from which every later point is within it); None: never."""
    if len(positions) != len(accuracy):
        raise ValueError(f"{len(positions)} positions but {len(accuracy)} accuracies.")
    found: int | None = None
    for pos, acc in zip(positions, accuracy, strict=True):
        if abs(acc - target) <= tolerance + 1e-12:
            if found is None:
                found = pos
        else:
            found = None
    return found


@torch.no_grad()
def _accuracy(
    model: SpikingNet, data: Split, coding: InputCoding, device: torch.device, seed: int
) -> float:
    correct = 0
    for idx, inputs in encoded_batches(data, coding, device, seed=seed):
        correct += int((model(inputs).argmax(1).cpu() == data.y[idx]).sum())
    return correct / max(len(data), 1)


@torch.no_grad()
def stream(
    model: SpikingNet,
    segments: list[tuple[Split, Split]],
    coding: InputCoding,
    device: torch.device,
    adaptation: OnlineAdaptation | None,
    checkpoint_every: int = 20,
    seed: int = 0,
) -> dict[str, list]:
    """Run E sample by sample over consecutive ``(stream, held_out)`` segments (e.g. clean, then
    shifted, then clean), adapting online; every ``checkpoint_every`` samples the current state is
    evaluated (counted from the segment's start), frozen, on the segment's held-out samples (a smooth curve of what the adapted state
    is worth, unlike the noisy per-sample hits).

    Returns ``correct`` (0/1 per stream sample), ``segment`` (its index), and ``positions`` /
    ``held_out_accuracy`` / ``checkpoint_segment`` of the checkpoints (positions count samples
    from the start of the stream)."""
    model.to(device).eval()
    out: dict[str, list] = {
        "correct": [],
        "segment": [],
        "positions": [],
        "held_out_accuracy": [],
        "checkpoint_segment": [],
    }
    seen = 0
    for k, (part, held_out) in enumerate(segments):
        for i, (idx, inputs) in enumerate(
            encoded_batches(part, coding, device, batch_size=1, seed=seed + k)
        ):
            if i % checkpoint_every == 0:
                if adaptation is None and i > 0:  # nothing adapts: the segment's first score holds
                    out["held_out_accuracy"].append(out["held_out_accuracy"][-1])
                else:
                    with frozen(adaptation):
                        out["held_out_accuracy"].append(
                            _accuracy(model, held_out, coding, device, seed)
                        )
                out["positions"].append(seen)
                out["checkpoint_segment"].append(k)
            out["correct"].append(int(model(inputs).argmax(1).cpu()[0] == part.y[idx][0]))
            out["segment"].append(k)
            seen += 1
    if adaptation is None:
        out["held_out_accuracy"].append(out["held_out_accuracy"][-1])
    else:
        with frozen(adaptation):
            out["held_out_accuracy"].append(_accuracy(model, segments[-1][1], coding, device, seed))
    out["positions"].append(seen)
    out["checkpoint_segment"].append(len(segments) - 1)
    return out


def stream_test(
    model: SpikingNet,
    refs: list[LayerReference],
    segments: list[tuple[Split, Split]],
    methods: dict[str, AdaptationConfig | None],
    coding: InputCoding,
    device: torch.device,
    checkpoint_every: int = 20,
    window: int = 50,
    tolerance: float = 0.01,
    seed: int = 0,
) -> dict[str, Any]:
    """The stream test: :func:`stream` over three equal segments (clean, shifted, clean) for E
    unadapted (a method of config None) and with each method. Per method: the sliding-window
    accuracy, the held-out curve, and for the change to the shift (segment 1) and back (2) the
    plateau and the samples until the curve stays within ``tolerance`` of it."""
    n = len(segments[0][0])
    out: dict[str, Any] = {"segment": n, "window": window, "methods": {}}
    for method, config in methods.items():
        if config is None:
            trace = stream(model, segments, coding, device, None, checkpoint_every, seed)
        else:
            with OnlineAdaptation(model, refs, config) as adapt:
                trace = stream(model, segments, coding, device, adapt, checkpoint_every, seed)
        result: dict[str, Any] = {
            "sliding_accuracy": sliding_accuracy(trace["correct"], window),
            "positions": trace["positions"],
            "held_out_accuracy": trace["held_out_accuracy"],
        }
        points = list(
            zip(trace["positions"], trace["held_out_accuracy"], trace["checkpoint_segment"])
        )
        for seg, label in ((1, "to_shift"), (2, "back")):
            pos = [q - seg * n for q, _, s in points if s == seg]
            acc = [v for _, v, s in points if s == seg]
            result[f"plateau_{label}"] = plateau(acc)
            result[f"recovery_{label}"] = recovery_samples(
                pos, acc, result[f"plateau_{label}"], tolerance
            )
        out["methods"][method] = result
    return out


def sliding_accuracy(correct: list[int], window: int) -> list[float]:
    """Accuracy over the last ``window`` samples at every position (fewer at the start)."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}.")
    c = torch.tensor(correct, dtype=torch.float64).cumsum(0)
    out = []
    for i in range(len(correct)):
        lo = i - window
        total = c[i] - (c[lo] if lo >= 0 else 0.0)
        out.append(float(total) / (i - max(lo, -1)))
    return out
