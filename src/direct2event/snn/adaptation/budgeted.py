"""Modulation within the event budget: the current statistics of ``modulation`` (which win back
accuracy) and, on top, a per-channel threshold factor that holds each channel's firing rate at
its calibrated rate (which holds E's events, and its energy, to what it was chosen for).

Why both: renormalising a channel's current to its clean mean and standard deviation restores
what the next layer reads, but not how often it fires: a shift such as noise changes the
*shape* of the current's distribution (more mass near the threshold), so the same mean and
spread fire more. The rate controller closes that gap, and only that gap: it starts at factor 1
and moves with the residual rate error after modulation, ``budget_step`` of its log per sample
(faster than ``homeostasis``, which must do all the work alone). On the calibration
distribution both parts stay at the identity. The adapted layer is still one threshold and one
bias per channel: ``theta * k / g`` and ``b / g`` (:meth:`effective_thresholds`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from direct2event.snn.adaptation.core import LayerReference, register
from direct2event.snn.adaptation.homeostasis import steer_rate
from direct2event.snn.adaptation.modulation import Modulation


@register
class Budgeted(Modulation):
    """Modulation, its firing rates held to the calibrated ones: a gain, a bias and a threshold
    factor per channel."""

    name = "budgeted"

    def initial(self, ref: LayerReference) -> dict[str, Tensor]:
        return {
            **super().initial(ref),
            "rate": ref.rate.clone(),
            "log_factor": torch.zeros_like(ref.rate),
        }

    def observe_output(self, i: int, spikes: Tensor) -> None:
        s, ref, c = self.state[i], self.reference[i], self.config
        steer_rate(s, ref, spikes, c, c.budget_step, every_channel=True, release=c.budget_release)

    def gain_bias(self, i: int) -> tuple[Tensor, Tensor]:
        gain, bias = super().gain_bias(i)
        factor = torch.exp(self.state[i]["log_factor"])
        return gain / factor, bias / factor
