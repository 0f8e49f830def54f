"""Input encoders: turn a batch into the ``[T, B, ...]`` input of a multi-step network.

- ``analog``: the analog tensor itself at every step (the paper's "direct coding", network D; for E this is
  the hybrid option whose first layer does multiply-accumulates).
- ``rate``: Bernoulli spikes with probability equal to the intensity in [0, 1].
- ``regular``: regular-rate coding: the spike count rate coding gives on average, ``round(T x)``,
  spaced evenly and without randomness (an integrate-and-fire encoder with reset by subtraction,
  started at half its threshold: sigma-delta modulation of the intensity). Same events on
  average as ``rate`` but none of its Bernoulli noise, which E otherwise has to average out
  with extra spikes in every layer.
- ``ttfs``: time-to-first-spike; thresholds ``linspace(1, 1/T, T)``, a value spikes once, at the
  first step whose threshold it reaches (brighter is earlier); values below ``1/T`` stay silent.
- ``frames``: event frames already binned to ``[B, T_bins, ...]`` (event datasets), moved to
  time-first. A network with fewer steps (``T_bins`` a multiple of them) gets coarser bins: each
  step sums ``T_bins / T`` adjacent bins, so the same events arrive, only in wider time bins.

Every encoder also says whether its output is events (counted as accumulates) or analog values
(counted as multiply-accumulates); see :mod:`direct2event.snn.ops`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

Encoding = Literal["analog", "rate", "regular", "ttfs", "frames"]
ENCODINGS: tuple[str, ...] = ("analog", "rate", "regular", "ttfs", "frames")


@dataclass(frozen=True)
class InputCoding:
    """How a network sees its input: an encoding and the number of time steps it runs for.

    The two always travel together (network D: analog or frames at ``model.timesteps``;
    network E: the event encoding at ``transfer.timesteps``)."""

    encoding: Encoding
    timesteps: int
    # The encoder's own online adaptation (``OnlineAdaptation.coding``): intensities in, the
    # intensities the encoder is driven by out, before encoding; None for a fixed encoder.
    adapter: Callable[[Tensor], Tensor] | None = field(default=None, compare=False, repr=False)


INTENSITY_ENCODINGS: tuple[str, ...] = ("rate", "regular", "ttfs")  # encoders fed intensities


def encodes_events(encoding: Encoding) -> bool:
    """True when the encoder emits events (spike counts), False for analog input."""
    return encoding != "analog"


def analog(x: Tensor, timesteps: int) -> Tensor:
    """Analog ("direct") coding: the same tensor at each of ``timesteps`` steps."""
    return x.unsqueeze(0).expand(timesteps, *x.shape)


def rate(x: Tensor, timesteps: int, generator: torch.Generator | None = None) -> Tensor:
    """Rate coding: independent Bernoulli spikes with ``P(spike) = x`` at each step."""
    _check_unit_range(x, "Rate")
    probs = x.unsqueeze(0).expand(timesteps, *x.shape)
    return torch.bernoulli(probs, generator=generator)


def _check_unit_range(x: Tensor, encoding: str) -> None:
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(
            f"{encoding} coding needs intensities in [0, 1]; normalise the input first."
        )


def regular(x: Tensor, timesteps: int) -> Tensor:
    """Regular-rate coding: ``round(T x)`` evenly spaced spikes per value, no randomness.

    Step ``t`` (1-based) spikes when ``floor(t x + 1/2)`` grows, so the spikes of a value are
    spread over the window the way an integrate-and-fire unit driven by ``x`` would emit them.
    """
    _check_unit_range(x, "Regular-rate")
    steps = torch.arange(1, timesteps + 1, device=x.device, dtype=x.dtype)
    counts = torch.floor(steps.view(-1, *([1] * x.dim())) * x.unsqueeze(0) + 0.5)
    return torch.diff(counts, dim=0, prepend=torch.zeros_like(counts[:1]))


def ttfs(x: Tensor, timesteps: int) -> Tensor:
    """Time-to-first-spike coding with thresholds ``linspace(1, 1/T, T)``: one spike at most."""
    thresholds = torch.linspace(1.0, 1.0 / timesteps, timesteps, device=x.device, dtype=x.dtype)
    reached = x.unsqueeze(0) >= thresholds.view(-1, *([1] * x.dim()))
    first = reached & (reached.to(torch.int8).cumsum(0) == 1)
    return first.to(x.dtype)


def frames(x: Tensor, timesteps: int) -> Tensor:
    """Event frames ``[B, T_bins, ...]`` to ``[T, B, ...]``, summing ``T_bins / T`` adjacent bins
    per step (equal-width bins stay equal-width; every event is kept)."""
    bins = x.shape[1]
    if timesteps <= 0 or bins % timesteps:
        raise ValueError(
            f"Event frames carry {bins} time bins but the network runs {timesteps} steps; "
            "the steps must divide the bins (set transfer.timesteps to a divisor of "
            "model.timesteps)."
        )
    x = x.transpose(0, 1)
    if bins == timesteps:
        return x
    return x.unflatten(0, (timesteps, bins // timesteps)).sum(1, dtype=x.dtype)


def encode(
    x: Tensor, encoding: Encoding, timesteps: int, generator: torch.Generator | None = None
) -> Tensor:
    """Dispatch to the named encoder."""
    if encoding == "analog":
        return analog(x, timesteps)
    if encoding == "rate":
        return rate(x, timesteps, generator)
    if encoding == "regular":
        return regular(x, timesteps)
    if encoding == "ttfs":
        return ttfs(x, timesteps)
    if encoding == "frames":
        return frames(x, timesteps)
    raise ValueError(f"Unknown input encoding '{encoding}'; use one of {ENCODINGS}.")
