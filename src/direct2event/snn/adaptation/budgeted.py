"""Modulation within the event budget: the current statistics of ``modulation`` (which win back
accuracy) and, on top, a per-channel threshold factor that holds each channel's firing rate at
its calibrated rate (which holds E's events, and its energy, to what it was chosen for).

Why both: renormalising a channel's current to its clean mean and standard deviation restores
what the next layer reads, but not how often it fires: a shift such as noise changes the
*shape* of the current's distribution (more mass near the threshold), so the same mean and
spread fire more. The rate controller closes that gap, and only that gap: it starts at factor 1
and moves with the residual rate error after modulation, ``budget_step`` of the relative error
per sample (faster than ``homeostasis``, which must do all the work alone), read from a short
running rate (``budget_momentum``: a controller that reads a rate as slow as itself swings) and
as a relative error (the log of a short, noisy average is biased low and would settle over the
budget; :func:`~direct2event.snn.adaptation.homeostasis.steer_rate`). On the calibration
distribution both parts stay at the identity. The adapted layer is still one threshold and one
bias per channel: ``theta * k / g`` and ``b / g`` (:meth:`effective_thresholds`).

Where E encodes intensities (images), the encoder's events are part of the budget, and often
the part a shift moves most: a brighter image turns its dark background into events at every
step. The encoder, an integrate-and-fire unit per pixel, gets the same two parts per input
channel (:meth:`adapt_input`): its intensities brought back to their clean mean and spread,
then held to their clean event rate, and clipped to [0, 1] (an encoder fires at most once a
step and never below zero). For the encoder that is a threshold ``k / g`` and a bias ``b / g``
(:meth:`input_gain_bias`). Event sensors' input is left as it comes (the clean front filters it).
"""

from __future__ import annotations

from functools import cached_property

import torch
from torch import Tensor

from direct2event.snn.adaptation.core import LayerReference, channel_view, register
from direct2event.snn.adaptation.homeostasis import Steering, steer_rate
from direct2event.snn.adaptation.modulation import Modulation, moment_gain_bias, track_moments


@register
class Budgeted(Modulation):
    """Modulation, its firing rates held to the calibrated ones: a gain, a bias and a threshold
    factor per channel."""

    name = "budgeted"
    adapts_input = True

    def initial(self, ref: LayerReference) -> dict[str, Tensor]:
        return {
            **super().initial(ref),
            "rate": ref.rate.clone(),
            "log_factor": torch.zeros_like(ref.rate),
        }

    def observe_output(self, i: int, spikes: Tensor) -> None:
        steer_rate(self.state[i], self.reference[i], spikes, self.config, self._steering)

    @cached_property
    def _steering(self) -> Steering:
        """The rate controller of a layer and of the encoder, every channel budgeted."""
        c = self.config
        return Steering(
            c.budget_step,
            every_channel=True,
            release=c.budget_release,
            momentum=c.budget_momentum,
            relative=True,
            band=c.noise_band,
        )

    def gain_bias(self, i: int) -> tuple[Tensor, Tensor]:
        gain, bias = moment_gain_bias(
            self.state[i], self.reference[i], self.config, self.config.noise_band
        )
        factor = torch.exp(self.state[i]["log_factor"])
        return gain / factor, bias / factor

    def input_gain_bias(self) -> tuple[Tensor, Tensor] | None:
        if self.input_reference is None:
            return None
        return self._encoder_gain_bias(self.input_reference)

    def _encoder_gain_bias(self, ref: LayerReference) -> tuple[Tensor, Tensor]:
        s = self.input_state
        gain, bias = moment_gain_bias(s, ref, self.config, self.config.noise_band)
        factor = torch.exp(s["log_factor"])
        return gain / factor, bias / factor

    def adapt_input(self, x: Tensor, frozen: bool) -> Tensor:
        """The encoder's intensities: moments, then event rate, back to the clean ones."""
        if self.input_reference is None:
            return x
        s, ref, c = self.input_state, self.input_reference, self.config
        steps = x.unsqueeze(0)  # the intensities as one step: [1, B, C, ...]
        if not frozen:
            track_moments(s, steps, c.momentum)
        gain, bias = self._encoder_gain_bias(ref)
        out = (steps * channel_view(gain, steps) + channel_view(bias, steps)).clamp(0.0, 1.0)
        if not frozen:
            steer_rate(s, ref, out, c, self._steering)
        return out[0]
