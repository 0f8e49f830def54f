"""Accuracy and counted activity of a network on a split, in one pass."""

from __future__ import annotations

from typing import Any

import torch

from direct2event.snn.encoders import InputCoding, encodes_events
from direct2event.snn.energy import EnergyProfile, bit_matched_bits, break_even_rate
from direct2event.snn.models import SpikingNet
from direct2event.snn.ops import OpCounts, count_operations, input_event_count
from direct2event.snn.training import Split, encoded_batches


@torch.no_grad()
def evaluate_with_counts(
    model: SpikingNet,
    data: Split,
    coding: InputCoding,
    device: torch.device,
    batch_size: int | None = None,
    seed: int = 0,
) -> tuple[float, OpCounts]:
    """Test accuracy plus events and synaptic operations counted on the same forward passes."""
    model.to(device).eval()
    events_in = encodes_events(coding.encoding)
    correct = 0
    with count_operations(model, input_events=events_in) as counts:
        for idx, inputs in encoded_batches(data, coding, device, batch_size, seed):
            counts.input_events += input_event_count(inputs, events_in)
            counts.samples += len(idx)
            counts.timesteps = inputs.shape[0]
            correct += int((model(inputs).argmax(1).cpu() == data.y[idx]).sum())
    return correct / max(len(data), 1), counts


def measure(
    net: SpikingNet,
    split: Split,
    coding: InputCoding,
    device: torch.device,
    profiles: dict[str, EnergyProfile],
    seed: int = 0,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """Accuracy, counted events and synops, firing rates and energy of one network: every
    network of a run (sweep trials, evaluation, ablation rows) is measured by this one function,
    so their numbers compare."""
    return measure_counts(net, split, coding, device, profiles, seed, batch_size)[0]


def measure_counts(
    net: SpikingNet,
    split: Split,
    coding: InputCoding,
    device: torch.device,
    profiles: dict[str, EnergyProfile],
    seed: int = 0,
    batch_size: int | None = None,
) -> tuple[dict[str, Any], OpCounts]:
    """:func:`measure`, with the counts it came from."""
    accuracy, counts = evaluate_with_counts(net, split, coding, device, batch_size, seed)
    return {
        "accuracy": accuracy,
        **counts.summary(),
        "energy_nJ_by_model": {k: p.energy_nj_per_sample(counts) for k, p in profiles.items()},
        "input_energy_nJ_by_model": {
            k: p.input_energy_nj_per_sample(counts) for k, p in profiles.items()
        },
        "layer_energy_nJ": {k: p.layer_energy_nj_per_sample(counts) for k, p in profiles.items()},
        "firing_rates": counts.firing_rates(),
        "synops_by_layer": {
            k: {"op": c.op, "per_sample": counts.per_sample(c.synops)}
            for k, c in counts.layers.items()
        },
    }, counts


def ann_reference(
    profiles: dict[str, EnergyProfile], direct: OpCounts, event: OpCounts
) -> dict[str, Any]:
    """The bit-matched ANN beside D and E: D's architecture in one pass with
    ``ceil(log2(T_E + 1))``-bit activations (:meth:`EnergyProfile.ann_energy_nj_per_sample`),
    its energy under every profile, E's reduction against it (ANN energy / E energy; below 1 E
    costs more) and the mean hidden spike rate at which E would break even with it."""
    bits = bit_matched_bits(event.timesteps)
    energy = {k: p.ann_energy_nj_per_sample(direct, bits) for k, p in profiles.items()}
    spikes = sum(event.neuron_events.values())
    return {
        "bits": bits,
        "energy_nJ_by_model": energy,
        "event_reduction_by_model": {
            k: energy[k] / e if (e := p.energy_nj_per_sample(event)) > 0 else None
            for k, p in profiles.items()
        },
        "break_even_rate_by_model": {
            k: break_even_rate(p, event, energy[k]) for k, p in profiles.items()
        },
        "event_spike_rate": spikes / max(event.neuron_updates, 1.0),
    }
