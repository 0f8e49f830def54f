"""Adaptive threshold scaling of network E, one threshold per channel (per neuron for linear).

``isotonic`` (the method): layer by layer, each channel's threshold is set so that E's firing
rate per step on the calibration split matches D's mean activation for that channel. The start
point is the closed form of a non-leaky integrate-and-fire neuron with reset by subtraction
(rate proportional to 1/theta): ``theta0 = mean g(a) / mean a``, with ``g`` the calibrated map
(E's rate at unit threshold). LIF leak makes the rate only approximately 1/theta, so a bisection
on theta (in log space, all channels at once) finishes the job. Only the neuron dynamics are
re-run during bisection: the input currents of the layer are captured once, since they depend
on earlier layers only, which are already fixed.

``percentile`` (the baseline, robust normalisation as in Rueckauer et al. 2017, snn_toolbox and
SpikingJelly's converter): theta = the p-th percentile of the positive input current per channel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from direct2event.snn.encoders import InputCoding
from direct2event.snn.models import SpikingNet
from direct2event.snn.neurons import LIF, lif_multistep
from direct2event.snn.training import INFERENCE_FOLDED_BATCH, Split, encoded_batches

THRESHOLD_MIN = 1e-3
THRESHOLD_MAX = 1e3


class ThresholdError(ValueError):
    """Threshold scaling produced a threshold that is zero, negative or not finite."""


@torch.no_grad()
def capture_currents(
    model: SpikingNet,
    layer: LIF,
    data: Split,
    coding: InputCoding,
    device: torch.device,
    batch_size: int | None = None,
    seed: int = 0,
) -> Tensor:
    """Input currents ``[T, N, C, ...]`` of ``layer`` over ``data`` (on the CPU)."""
    model.to(device).eval()
    chunks: list[Tensor] = []
    handle = layer.register_forward_pre_hook(lambda _m, inp: chunks.append(inp[0].detach().cpu()))
    try:
        for _, inputs in encoded_batches(data, coding, device, batch_size, seed):
            model(inputs)
    finally:
        handle.remove()
    return torch.cat(chunks, dim=1)


@torch.no_grad()
def channel_rates(
    layer: LIF, currents: Tensor, threshold: Tensor, chunk: int | None = None
) -> Tensor:
    """Mean spikes per step of each channel of ``layer`` driven by ``currents`` at ``threshold``."""
    total = torch.zeros(currents.shape[2], dtype=torch.float64)
    shape = (-1, *([1] * (currents.dim() - 3)))
    chunk = chunk or max(8, INFERENCE_FOLDED_BATCH // currents.shape[0])
    for start in range(0, currents.shape[1], chunk):
        out = lif_multistep(
            currents[:, start : start + chunk], threshold.view(shape), layer.params, "binary"
        )
        total += out.transpose(0, 2).reshape(out.shape[2], -1).sum(1).double()
    per_channel = currents[0, 0, 0].numel() * currents.shape[0] * currents.shape[1]
    return (total / per_channel).float()


def bisect_thresholds(
    layer: LIF,
    currents: Tensor,
    targets: Tensor,
    start: Tensor,
    iterations: int = 14,
    span: float = 16.0,
) -> Tensor:
    """Per-channel thresholds whose firing rate matches ``targets`` (bisection in log theta)."""
    lo = torch.log(torch.clamp(start / span, THRESHOLD_MIN, THRESHOLD_MAX))
    hi = torch.log(torch.clamp(start * span, THRESHOLD_MIN, THRESHOLD_MAX))
    # each end's rates, kept from the step that moved it there (a channel's rate depends on
    # its own threshold only): the final choice then needs no pass of its own
    nan = torch.full_like(targets, float("nan"))
    rate_lo, rate_hi = nan.clone(), nan.clone()
    for _ in range(iterations):
        mid = (lo + hi) / 2
        rates = channel_rates(layer, currents, torch.exp(mid))
        too_many = rates > targets  # firing too much: raise the threshold
        lo, rate_lo = torch.where(too_many, mid, lo), torch.where(too_many, rates, rate_lo)
        hi, rate_hi = torch.where(too_many, hi, mid), torch.where(too_many, rate_hi, rates)
    # The rate is a step function of theta (inputs are discrete, e.g. every background pixel
    # drives a channel with the same current), so the bracket can close on a jump: take the end
    # of the bracket whose rate is closer to the target.
    theta_lo, theta_hi = torch.exp(lo), torch.exp(hi)
    for theta_end, rate in ((theta_lo, rate_lo), (theta_hi, rate_hi)):
        unset = rate.isnan()  # an end never moved: its start bound, measured now
        if unset.any():
            rate.copy_(torch.where(unset, channel_rates(layer, currents, theta_end), rate))
    err_lo, err_hi = (rate_lo - targets).abs(), (rate_hi - targets).abs()
    theta = torch.where(err_lo < err_hi, theta_lo, theta_hi)
    silent = targets <= 0  # D never activates this channel: keep E silent too
    return torch.where(silent, torch.full_like(theta, THRESHOLD_MAX), theta)


def percentile_thresholds(currents: Tensor, percentile: float) -> Tensor:
    """p-th percentile of the positive input current per channel (robust normalisation)."""
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}.")
    per_channel = currents.clamp(min=0).transpose(0, 2).reshape(currents.shape[2], -1)
    sample = per_channel[
        :,
        torch.randperm(per_channel.shape[1], generator=torch.Generator().manual_seed(0))[:200_000],
    ]
    theta = torch.quantile(sample, percentile / 100.0, dim=1)
    return torch.where(theta > 0, theta, torch.ones_like(theta))  # never-driven: never fires


@dataclass
class ThresholdReport:
    """Per-layer thresholds and the rate mismatch they leave on the calibration split."""

    layer: str
    thresholds: Tensor
    target_rate: Tensor
    rate_before: Tensor
    rate_after: Tensor

    @staticmethod
    def mismatch(rate: Tensor, target: Tensor) -> float:
        """Mean absolute rate error over channels, relative to the mean target rate."""
        return float((rate - target).abs().mean() / target.mean().clamp(min=1e-12))


def check_thresholds(name: str, theta: Tensor) -> None:
    bad = ~torch.isfinite(theta) | (theta <= 0)
    if bad.any():
        channels = torch.nonzero(bad).flatten().tolist()[:10]
        raise ThresholdError(
            f"Layer {name}: thresholds of channels {channels} would be {theta[bad][:10].tolist()} "
            "(zero, negative or not finite). Check the calibration split (is it empty or NaN?) and "
            "the direct model's weights."
        )


@dataclass(frozen=True)
class ThresholdConfig:
    """How E's thresholds are set: ``isotonic`` (per-channel rates matched to D's activations by
    bisection on log(theta), ``iterations`` steps) or ``percentile`` (the robust-normalisation
    baseline: that percentile of the channel's input currents)."""

    method: str = "isotonic"
    percentile: float = 99.9
    iterations: int = 14


def scale_thresholds(
    model: SpikingNet,
    data: Split,
    coding: InputCoding,
    device: torch.device,
    cfg: ThresholdConfig = ThresholdConfig(),
    targets: list[Tensor] | None = None,
    starts: list[Tensor] | None = None,
    seed: int = 0,
) -> list[ThresholdReport]:
    """Set every LIF layer's thresholds in ``model`` (network E, in place), first layer first.

    ``isotonic`` needs ``targets`` (D's mean activation per channel) and ``starts`` (closed-form
    start points); ``percentile`` needs neither.
    """
    method, percentile, iterations = cfg.method, cfg.percentile, cfg.iterations
    if method not in ("isotonic", "percentile"):
        raise ValueError(f"Unknown threshold method '{method}'; use 'isotonic' or 'percentile'.")
    if method == "isotonic" and (targets is None or starts is None):
        raise ValueError("isotonic threshold scaling needs targets and start points.")
    names = {id(m): n for n, m in model.named_modules()}
    reports = []
    for i, layer in enumerate(model.lif_layers()):
        currents = capture_currents(model, layer, data, coding, device, seed=seed)
        before = channel_rates(layer, currents, layer.threshold.cpu())
        if method == "isotonic":
            assert targets is not None and starts is not None
            theta = bisect_thresholds(layer, currents, targets[i], starts[i], iterations)
            target = targets[i]
        else:
            theta = percentile_thresholds(currents, percentile)
            target = before  # no target rate: the report shows how far rates moved
        check_thresholds(names[id(layer)], theta)
        layer.threshold.copy_(theta.to(layer.threshold.device))
        after = channel_rates(layer, currents, theta)
        reports.append(ThresholdReport(names[id(layer)], theta, target, before, after))
    return reports
