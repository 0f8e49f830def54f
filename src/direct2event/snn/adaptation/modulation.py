"""Threshold modulation (after arXiv 2505.05375): running per-channel mean and standard
deviation of each LIF layer's input current are set against those recorded on the clean
calibration sample, and the current is renormalised, ``x' = (x - mu_run) * g + mu_ref`` with
``g = sigma_ref / sigma_run``. For a LIF with reset by subtraction this is exactly a threshold
``theta / g`` plus a constant bias current ``(mu_ref - g mu_run) / g`` per channel, so a chip
with per-channel thresholds and biases can run it."""

from __future__ import annotations

import torch
from torch import Tensor

from direct2event.snn.adaptation.core import (
    EPS,
    AdaptationConfig,
    AdaptationMethod,
    LayerReference,
    ema,
    per_sample_double,
    register,
    within_noise,
)


def track_moments(s: dict[str, Tensor], x: Tensor, momentum: float) -> None:
    """Running per-channel mean and mean square of a current ``[T, B, C, ...]``."""
    s["mean"] = ema(s["mean"].double(), per_sample_double(x), momentum).float()
    s["square"] = ema(s["square"].double(), per_sample_double(x * x), momentum).float()


def moment_gain_bias(
    s: dict[str, Tensor], ref: LayerReference, config: AdaptationConfig, band: float = 0.0
) -> tuple[Tensor, Tensor]:
    """The gain and bias that bring the running moments back to the reference's; with
    ``band``, a moment within ``band`` standard errors of the reference's counts as the
    reference's (:func:`~direct2event.snn.adaptation.core.within_noise`)."""
    mean = s["mean"]
    std = torch.sqrt(torch.clamp(s["square"] - mean**2, min=0.0))
    if band:
        m = config.momentum
        mean_noise = ref.noise(ref.mean_spread, m)
        # the std's standard error from those of the mean square and the mean (delta method;
        # their covariance, which the reference does not record, left out)
        square_noise = ref.noise(ref.square_spread, m)
        std_noise = (square_noise**2 + (2 * ref.mean * mean_noise) ** 2) ** 0.5 / (
            2 * ref.std.clamp(min=EPS)
        )
        mean = ref.mean + within_noise(mean - ref.mean, mean_noise, band)
        std = ref.std + within_noise(std - ref.std, std_noise, band)
    gain = (ref.std / std.clamp(min=EPS)).clamp(1.0 / config.max_gain, config.max_gain)
    gain = torch.where(ref.std > EPS, gain, torch.ones_like(gain))
    return gain, ref.mean - gain * mean


@register
class Modulation(AdaptationMethod):
    """Current statistics back to the clean ones: a gain and a bias per channel."""

    name = "modulation"

    def initial(self, ref: LayerReference) -> dict[str, Tensor]:
        return {"mean": ref.mean.clone(), "square": ref.std**2 + ref.mean**2}

    def observe_input(self, i: int, x: Tensor) -> None:
        track_moments(self.state[i], x, self.config.momentum)

    def gain_bias(self, i: int) -> tuple[Tensor, Tensor]:
        return moment_gain_bias(self.state[i], self.reference[i], self.config)
