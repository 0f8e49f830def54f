"""Accuracy and counted activity of a network on a split, in one pass."""

from __future__ import annotations

import torch

from direct2event.snn.encoders import Encoding, encodes_events
from direct2event.snn.models import SpikingNet
from direct2event.snn.ops import OpCounts, count_operations, input_event_count
from direct2event.snn.training import Split, encoded_batches


@torch.no_grad()
def evaluate_with_counts(
    model: SpikingNet,
    data: Split,
    encoding: Encoding,
    timesteps: int,
    device: torch.device,
    batch_size: int | None = None,
    seed: int = 0,
) -> tuple[float, OpCounts]:
    """Test accuracy plus events and synaptic operations counted on the same forward passes."""
    model.to(device).eval()
    events_in = encodes_events(encoding)
    correct = 0
    with count_operations(model, input_events=events_in) as counts:
        for idx, inputs in encoded_batches(data, encoding, timesteps, device, batch_size, seed):
            counts.input_events += input_event_count(inputs, events_in)
            counts.samples += len(idx)
            correct += int((model(inputs).argmax(1).cpu() == data.y[idx]).sum())
    return correct / max(len(data), 1), counts
