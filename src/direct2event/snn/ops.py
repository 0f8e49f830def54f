"""Counting events and synaptic operations from the real activity of a forward pass.

Definitions (the same for network D and network E):

- **event**: one non-zero message. Each non-zero LIF output per step is one event (graded in D,
  a spike in E). Input: an event-coded input (rate, TTFS, event frames) sends as many events as
  its value (a frame cell that counts 3 events is 3 events); an analog input sends one message
  per non-zero value.
- **synaptic operation (synop)**: one message reaching one post-synaptic target. A message at
  input position p of a conv layer reaches ``C_out / groups`` channels times the number of output
  positions whose receptive field covers p (exact at padded borders, with stride and dilation);
  a message into a linear layer reaches all ``out_features`` outputs.
- A synop is an **accumulate (AC)** when the message is a binary event (a spike, or an input
  event; weighted by the event count) and a **multiply-accumulate (MAC)** when it carries a
  graded or analog value.

Counting uses forward hooks on the layers that receive messages, as sinabs' synops counter does,
so the numbers come from the actual input of each layer, per layer.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from direct2event.snn.models import SpikingNet
from direct2event.snn.neurons import LIF


@dataclass
class LayerCount:
    """Totals of one synaptic layer over everything counted so far."""

    name: str
    synops: float = 0.0
    op: str = "AC"  # AC (binary events in) or MAC (graded / analog values in)
    dense: float = 0.0  # synops had every input been non-zero (a dense pass's operations)
    weights: int = 0  # the layer's weights: its weight memory, in entries


@dataclass
class OpCounts:
    """Event and synaptic-operation totals of a model over ``samples`` inputs."""

    samples: int = 0
    input_events: float = 0.0
    input_layer: str | None = None  # the synaptic layer the network input drives
    neuron_events: dict[str, float] = field(default_factory=dict)
    neuron_steps: dict[str, float] = field(default_factory=dict)
    neuron_sizes: dict[str, int] = field(default_factory=dict)  # neurons per sample and step
    layers: dict[str, LayerCount] = field(default_factory=dict)
    timesteps: int = 1  # steps per sample (a dense ANN does in one pass what a step does)

    def per_sample(self, value: float) -> float:
        return value / max(self.samples, 1)

    @property
    def events(self) -> float:
        """All events (input plus every neuron's non-zero outputs), in total."""
        return self.input_events + sum(self.neuron_events.values())

    @property
    def ac(self) -> float:
        return sum(c.synops for c in self.layers.values() if c.op == "AC")

    @property
    def mac(self) -> float:
        return sum(c.synops for c in self.layers.values() if c.op == "MAC")

    @property
    def neuron_updates(self) -> float:
        """Membrane updates: every neuron at every step (leak, integrate, maybe fire)."""
        return sum(self.neuron_steps.values())

    def firing_rates(self) -> dict[str, float]:
        """Mean output per neuron per step of each LIF layer (fraction of non-zero outputs)."""
        return {k: v / max(self.neuron_steps[k], 1.0) for k, v in self.neuron_events.items()}

    def summary(self) -> dict[str, float]:
        """Per-sample totals."""
        return {
            "events_per_sample": self.per_sample(self.events),
            "input_events_per_sample": self.per_sample(self.input_events),
            "synops_per_sample": self.per_sample(self.ac + self.mac),
            "ac_per_sample": self.per_sample(self.ac),
            "mac_per_sample": self.per_sample(self.mac),
        }


_FANOUT_CACHE: dict[tuple, Tensor] = {}


def conv_fanout(
    conv: nn.Conv2d, height: int, width: int, device: torch.device | str = "cpu"
) -> Tensor:
    """Targets reached by one message at each input position ``[H, W]`` of ``conv`` (exact),
    on ``device`` (the device of the activity it multiplies).

    The coverage count is the gradient of the summed output of an all-ones convolution with
    respect to an all-ones input: the number of output positions that read each input position.
    """
    device = torch.device(device)
    key = (conv.kernel_size, conv.stride, conv.padding, conv.dilation, height, width, device)
    if key not in _FANOUT_CACHE:
        with torch.enable_grad():
            x = torch.ones(1, 1, height, width, requires_grad=True, device=device)
            w = torch.ones(1, 1, *conv.kernel_size, device=device)
            out = F.conv2d(x, w, None, conv.stride, conv.padding, conv.dilation)
            (grad,) = torch.autograd.grad(out.sum(), x)
        _FANOUT_CACHE[key] = grad[0, 0].detach()
    return _FANOUT_CACHE[key] * (conv.out_channels // conv.groups)


def _synapse_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def _message_weight(x: Tensor, events: bool) -> Tensor:
    """Messages per entry: the event count for events, one per non-zero analog value."""
    return x.abs() if events else (x != 0).to(x.dtype)


@contextmanager
def count_operations(
    model: SpikingNet, input_events: bool, counts: OpCounts | None = None
) -> Iterator[OpCounts]:
    """Count events and synops of every forward pass of ``model`` run inside the block.

    ``input_events`` says whether the network input is event-coded (AC at the first layer) or
    analog (MAC). Hidden messages are ACs when the LIF layers are binary, MACs when graded. The
    caller adds the number of samples (``counts.samples``) and the input events it fed.
    """
    counts = counts or OpCounts()
    binary = model.mode == "binary"
    first_layer: list[str] = []
    handles = []

    def synapse_hook(name: str):
        def hook(module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
            x = inputs[0].detach()
            if not first_layer:
                first_layer.append(name)
                counts.input_layer = name
            is_events = input_events if name == first_layer[0] else binary
            weight = _message_weight(x, is_events)
            if isinstance(module, nn.Conv2d):
                # messages at each position times its targets: one matrix-vector product over
                # [batch * channels, positions], up to 20x faster than reducing batch and channels
                # first (a strided reduction; benchmarks/ops_counting.py); row sums are exact
                # integers for events, the total is summed in float64
                fanout = conv_fanout(module, *x.shape[-2:], device=x.device).to(weight.dtype)
                rows = weight.reshape(-1, fanout.numel()) @ fanout.reshape(-1)
                synops = float(rows.double().sum())
                dense = float(fanout.double().sum()) * x.shape[0] * x.shape[1]
            else:
                synops = float(weight.sum()) * module.out_features
                dense = float(x.numel()) * module.out_features
            entry = counts.layers.setdefault(
                name,
                LayerCount(name, op="AC" if is_events else "MAC", weights=module.weight.numel()),
            )
            entry.synops += synops
            entry.dense += dense

        return hook

    def neuron_hook(name: str):
        def hook(_module: nn.Module, _inputs: object, output: Tensor) -> None:
            out = output.detach()
            if binary:  # spikes are 0 or 1: their sum is their count, 3x faster than != 0
                fired = float(out.sum(dim=0).double().sum())
            else:
                fired = float(torch.count_nonzero(out))
            counts.neuron_events[name] = counts.neuron_events.get(name, 0.0) + fired
            counts.neuron_steps[name] = counts.neuron_steps.get(name, 0.0) + float(out.numel())
            counts.neuron_sizes[name] = out[0, 0].numel()  # [T, B, ...]: one sample, one step

        return hook

    for name, module in _synapse_layers(model):
        handles.append(module.register_forward_pre_hook(synapse_hook(name)))
    for name, module in model.named_modules():
        if isinstance(module, LIF):
            handles.append(module.register_forward_hook(neuron_hook(name)))
    try:
        yield counts
    finally:
        for handle in handles:
            handle.remove()


def input_event_count(inputs: Tensor, events: bool) -> float:
    """Events sent by the network input ``[T, B, ...]`` (see :func:`_message_weight`)."""
    return float(_message_weight(inputs, events).sum())
