"""Loss terms of event-driven fine-tuning.

- Spike-rate regularisation: ``lambda * mean spikes per neuron per step`` over all LIF layers
  (an L1 penalty on spike counts, normalised so that lambda does not depend on network size).
- Self-knowledge distillation: ``alpha * CE + (1 - alpha) * tau^2 * KL(D || E)`` on
  temperature-scaled logits, with the frozen direct-coded network D as teacher on direct input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from direct2event.snn.encoders import Encoding, encode
from direct2event.snn.models import SpikingNet
from direct2event.snn.training import mean_rate


@dataclass
class TransferLoss:
    """Extra loss of fine-tuning, added to ``CE`` (or replacing part of it when distilling).

    Called as ``loss(logits, y, activity, x)`` by :func:`direct2event.snn.training.fit`.
    """

    rate_lambda: float = 0.0
    teacher: SpikingNet | None = None
    teacher_encoding: Encoding = "direct"
    teacher_timesteps: int = 4
    alpha: float = 0.4
    temperature: float = 2.0

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

    def __call__(self, logits: Tensor, y: Tensor, activity: list[Tensor], x: Tensor) -> Tensor:
        loss = self.rate_lambda * mean_rate(activity) if self.rate_lambda else logits.new_zeros(())
        if self.teacher is None:
            return loss
        with torch.no_grad():
            teacher_logits = self.teacher(encode(x, self.teacher_encoding, self.teacher_timesteps))
        kl = F.kl_div(
            F.log_softmax(logits / self.temperature, dim=1),
            F.log_softmax(teacher_logits / self.temperature, dim=1),
            log_target=True,
            reduction="batchmean",
        )
        ce = F.cross_entropy(logits, y)
        # fit() adds CE once; replace it by alpha * CE + (1 - alpha) * tau^2 * KL
        return loss - ce + self.alpha * ce + (1 - self.alpha) * self.temperature**2 * kl
