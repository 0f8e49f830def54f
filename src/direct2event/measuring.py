"""Measure a network on a split: accuracy, counted events and synops, firing rates, energy.

Shared by the stages that compare networks (sweep trials, evaluation, ablation), so every number
of a run is measured the same way.
"""

from __future__ import annotations

from typing import Any

import torch

from direct2event.snn.encoders import InputCoding
from direct2event.snn.energy import EnergyProfile
from direct2event.snn.evaluation import evaluate_with_counts
from direct2event.snn.models import SpikingNet
from direct2event.snn.training import Split


def measure(
    net: SpikingNet,
    split: Split,
    coding: InputCoding,
    device: torch.device,
    profiles: dict[str, EnergyProfile],
    seed: int = 0,
) -> dict[str, Any]:
    """Accuracy, counted events and synops, firing rates and energy of one network."""
    accuracy, counts = evaluate_with_counts(
        net, split, coding.encoding, coding.timesteps, device, seed=seed
    )
    return {
        "accuracy": accuracy,
        **counts.summary(),
        "energy_uJ_by_model": {k: p.energy_uj_per_sample(counts) for k, p in profiles.items()},
        "layer_energy_uJ": {k: p.layer_energy_uj_per_sample(counts) for k, p in profiles.items()},
        "firing_rates": counts.firing_rates(),
        "synops_by_layer": {
            k: {"op": c.op, "per_sample": counts.per_sample(c.synops)}
            for k, c in counts.layers.items()
        },
    }
