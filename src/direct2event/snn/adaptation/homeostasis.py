"""Rate homeostasis: each channel's running firing rate is steered back to its calibrated rate
by a multiplicative threshold update, ``log k += step * log(r_run / r_ref)`` per sample,
threshold ``k * theta``. It keeps E's events (and energy) near their budget."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from direct2event.snn.adaptation.core import (
    EPS,
    SILENT_RATE,
    AdaptationConfig,
    AdaptationMethod,
    LayerReference,
    channel_view,
    ema,
    per_sample_double,
    register,
    within_noise,
)

# The most of a rate error one update corrects. A batch sees its new thresholds only at the next
# batch, and a channel's rate moves several times as much as its threshold: a batch of 85 that
# corrected 1 - 0.95^85 = 99 % of an error in one go (the release) overshot, was released back,
# and cycled, ending 20 % over its budget under noise. A single sample corrects far less.
MAX_BATCH_CORRECTION = 0.5


@dataclass(frozen=True)
class Steering:
    """How :func:`steer_rate` moves a threshold factor (see there): ``step`` per sample, every
    channel or only those active on clean data, a faster ``release`` back toward 1, the
    ``momentum`` of the rate it reads (default the config's), a ``relative`` error, and a
    ``band`` of standard errors of that rate within which it does not move away from 1."""

    step: float
    every_channel: bool = False
    release: float | None = None
    momentum: float | None = None
    relative: bool = False
    band: float = 0.0


def steer_rate(
    s: dict[str, Tensor],
    ref: LayerReference,
    spikes: Tensor,
    config: AdaptationConfig,
    steering: Steering,
) -> None:
    """One layer's threshold factor ``exp(s["log_factor"])`` moved toward the calibrated rate:
    the running rate (momentum per sample) against ``ref.rate``, ``step`` of the log error
    corrected per sample, compounded over the batch (a batch of B corrects 1 - (1 - step)^B of
    it, never more than ``MAX_BATCH_CORRECTION``, so large batches stay stable although they
    see the new threshold only at the next batch); channels silent on clean data are left alone unless
    ``every_channel``, which holds them at ``SILENT_RATE`` at most (a budget: a silent channel
    that starts firing under a shift is stopped).

    With ``release``, a correction that moves the factor back toward 1 runs at ``release`` per
    sample (and stops at 1), one that moves it away at ``step``: a plain integrator holds the
    thresholds it raised under a shift until the rates have been too low for long enough to unwind
    them, and accuracy collapses meanwhile (the stream test's return to clean data).

    ``momentum`` (default ``config.momentum``) is that of the running rate the controller reads:
    an integrator that reads a rate averaged over ~1 / (1 - momentum) samples acts on old news,
    and with a lag as long as its own time constant it overshoots and swings. A short average
    is noisy, and the log of a noisy rate is biased low (Jensen): a controller on it settles
    above its budget. ``relative`` uses the relative error ``(r - r_ref) / r_ref`` (clipped to
    +-1) instead, unbiased, for such a short average.

    ``band``: a rate within ``band`` standard errors of its budget (the running rate's noise on
    clean data, :meth:`LayerReference.noise`) does not move the factor away from 1; a clean
    stream's own wandering then leaves E's thresholds alone. The release reads the whole error,
    so a factor raised under a shift still comes back all the way."""
    step, every_channel, release = steering.step, steering.every_channel, steering.release
    momentum, relative = steering.momentum, steering.relative
    rates = per_sample_double(spikes)
    m = config.momentum if momentum is None else momentum
    s["rate"] = ema(s["rate"].double(), rates, m).float()
    target = ref.rate.clamp(min=SILENT_RATE) if every_channel else ref.rate
    if relative:
        error = ((s["rate"] - target) / (target + EPS)).clamp(-1.0, 1.0)
    else:
        error = torch.log((s["rate"] + EPS) / (target + EPS))
    steered = ref.active | ((s["rate"] > target) if every_channel else ref.active)
    before = s["log_factor"]
    back = (error * before < 0) if release is not None else torch.zeros_like(steered)
    if steering.band:
        noise = ref.noise(ref.rate_spread, m) / (target + EPS)  # relative, or d log r
        error = torch.where(back, error, within_noise(error, noise, steering.band))
    per_channel = torch.where(
        back, torch.full_like(error, release or 0.0), torch.full_like(error, step)
    )
    fraction = (1.0 - (1.0 - per_channel) ** rates.shape[0]).clamp(max=MAX_BATCH_CORRECTION)
    after = before + fraction * torch.where(steered, error, torch.zeros_like(error))
    after = torch.where(back & (after * before < 0), torch.zeros_like(after), after)  # stop at 1
    limit = math.log(config.max_gain)
    s["log_factor"] = after.clamp(-limit, limit)


@register
class Homeostasis(AdaptationMethod):
    """Firing rates back to the calibrated ones: a threshold factor per channel."""

    name = "homeostasis"

    def initial(self, ref: LayerReference) -> dict[str, Tensor]:
        return {"rate": ref.rate.clone(), "log_factor": torch.zeros_like(ref.rate)}

    def pre(self, i: int, x: Tensor, frozen: bool) -> Tensor:
        return x * channel_view(torch.exp(-self.state[i]["log_factor"]), x)  # threshold k theta

    def observe_output(self, i: int, spikes: Tensor) -> None:
        steer_rate(
            self.state[i], self.reference[i], spikes, self.config, Steering(self.config.step)
        )

    def gain_bias(self, i: int) -> tuple[Tensor, Tensor]:
        factor = self.state[i]["log_factor"]
        return torch.exp(-factor), torch.zeros_like(factor)

    def effective_thresholds(self, thresholds: list[Tensor]) -> list[tuple[Tensor, Tensor]]:
        return [
            (theta * torch.exp(s["log_factor"]), torch.zeros_like(theta))
            for theta, s in zip(thresholds, self.state, strict=True)
        ]
