"""Loss terms of event-driven fine-tuning.

- Spike-rate regularisation: ``lambda * mean spikes per neuron per step`` over all LIF layers
  (an L1 penalty on spike counts, normalised so that lambda does not depend on network size);
  priced by an energy model (``layer_costs``), each layer's spikes weigh what they cost.
- Self-knowledge distillation: ``alpha * CE + (1 - alpha) * tau^2 * KL(D || E)`` on
  temperature-scaled logits, with the frozen direct-coded network D as teacher on direct input.
  D's logits can be computed once for the whole training split (``teacher_logits``): D is frozen
  and its direct input has no randomness, so they do not change between epochs, and running D
  at every step would cost a large share of each fine-tuning step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from direct2event.snn.encoders import InputCoding, encode
from direct2event.snn.models import SpikingNet
from direct2event.snn.training import mean_rate


@dataclass
class TransferLoss:
    """Extra loss of fine-tuning, added to ``CE`` (or replacing part of it when distilling).

    Called as ``loss(logits, y, activity, x, idx)`` by :func:`direct2event.snn.training.fit`
    (``idx``: the batch's sample indices in the training split). With ``teacher_logits`` (D's
    logits for every training sample, in order) the teacher is looked up instead of run.
    """

    rate_lambda: float = 0.0
    teacher: SpikingNet | None = None
    teacher_coding: InputCoding = field(default_factory=lambda: InputCoding("analog", 4))
    alpha: float = 0.4
    temperature: float = 2.0
    teacher_logits: Tensor | None = None
    # pJ per spike of each LIF layer (snn.energy.spike_costs): the penalty priced by the energy
    # model; None: every spike costs the same (the rate penalty)
    layer_costs: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.rate_lambda < 0:
            raise ValueError(
                f"The rate regularisation strength must be >= 0, got {self.rate_lambda}."
            )
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {self.alpha}.")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}.")
        if self.teacher is not None:
            self.teacher.eval()
            for p in self.teacher.parameters():
                p.requires_grad_(False)

    def __call__(
        self,
        logits: Tensor,
        y: Tensor,
        activity: list[Tensor],
        x: Tensor,
        idx: Tensor | None = None,
    ) -> Tensor:
        loss = (
            self.rate_lambda * mean_rate(activity, self.layer_costs)
            if self.rate_lambda
            else logits.new_zeros(())
        )
        if self.teacher is None and self.teacher_logits is None:
            return loss
        if self.teacher_logits is not None and idx is not None:
            teacher_logits = self.teacher_logits[idx].to(logits.device)
        elif self.teacher is not None:
            with torch.no_grad():
                coding = self.teacher_coding
                teacher_logits = self.teacher(encode(x, coding.encoding, coding.timesteps))
        else:
            raise ValueError("Precomputed teacher logits need the batch's sample indices.")
        kl = F.kl_div(
            F.log_softmax(logits / self.temperature, dim=1),
            F.log_softmax(teacher_logits / self.temperature, dim=1),
            log_target=True,
            reduction="batchmean",
        )
        ce = F.cross_entropy(logits, y)
        # fit() adds CE once; replace it by alpha * CE + (1 - alpha) * tau^2 * KL
        return loss - ce + self.alpha * ce + (1 - self.alpha) * self.temperature**2 * kl
