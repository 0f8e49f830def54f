from __future__ import annotations

import pytest
import torch
from torch import nn

from direct2event.snn.energy import (
    EnergyProfile,
    bit_matched_bits,
    break_even_rate,
    load_profiles,
    spike_costs,
)
from direct2event.snn.models import SpikingNet
from direct2event.snn.neurons import LIF, LIFParameters
from direct2event.snn.ops import conv_fanout, count_operations, input_event_count
from direct2event.snn.training import mean_rate


def tiny_net(mode: str) -> SpikingNet:
    """conv 1->2 (3x3, pad 1), LIF, conv 2->3 (3x3, stride 2, pad 1), LIF, linear 12->4.

    Zero weights and bias +2 make every neuron fire (or output 1.0 when graded) at every step,
    so the activity, and the operation counts, are known by hand.
    """
    params = LIFParameters(beta=0.5)
    conv1 = nn.Conv2d(1, 2, 3, 1, 1)
    conv2 = nn.Conv2d(2, 3, 3, 2, 1)
    for conv in (conv1, conv2):
        nn.init.zeros_(conv.weight)
        nn.init.constant_(conv.bias, 2.0)
    layers = [conv1, LIF(2, params), conv2, LIF(3, params), nn.Flatten(), nn.Linear(12, 4)]
    return SpikingNet(layers, "tiny", {}).set_mode(mode)  # type: ignore[arg-type]


def hand_input(steps: int = 2) -> torch.Tensor:
    x = torch.zeros(steps, 1, 1, 4, 4)
    x[:, 0, 0, 0, 0] = 1  # corner: 2x2 output positions read it
    x[:, 0, 0, 0, 1] = 1  # edge: 2x3
    x[:, 0, 0, 1, 1] = 1  # interior: 3x3
    return x


def test_fanout_at_borders_and_with_stride() -> None:
    same = conv_fanout(nn.Conv2d(1, 2, 3, 1, 1), 4, 4)
    assert same[0, 0] == 4 * 2 and same[0, 1] == 6 * 2 and same[1, 1] == 9 * 2
    strided = conv_fanout(nn.Conv2d(2, 3, 3, 2, 1), 4, 4) / 3
    per_axis = torch.tensor([1.0, 2.0, 1.0, 1.0])  # output rows covering input rows 0..3
    assert torch.equal(strided, per_axis[:, None] * per_axis[None, :])
    grouped = conv_fanout(nn.Conv2d(4, 8, 3, 1, 1, groups=2), 4, 4)
    assert grouped[1, 1] == 9 * 4  # C_out / groups targets per position


@pytest.mark.parametrize(("mode", "op"), [("binary", "AC"), ("graded", "MAC")])
def test_counts_and_energy_equal_hand_computation(mode: str, op: str) -> None:
    net = tiny_net(mode)
    x = hand_input(steps=2)
    with torch.no_grad(), count_operations(net, input_events=mode == "binary") as counts:
        counts.input_events += input_event_count(x, mode == "binary")
        counts.samples += 1
        net(x)
    # per step: conv1 (4 + 6 + 9) * 2 = 38; conv2 sum(r_i c_j) = 25 per channel * 2 in * 3 out
    # = 150; linear 12 inputs * 4 = 48
    assert counts.layers["layers.0"].synops == 2 * 38
    assert counts.layers["layers.2"].synops == 2 * 150
    assert counts.layers["layers.5"].synops == 2 * 48
    assert {c.op for c in counts.layers.values()} == {op}
    # events per step: 3 input + 32 (2x4x4) + 12 (3x2x2)
    assert counts.events == 2 * (3 + 32 + 12)
    assert counts.firing_rates() == {"layers.1": 1.0, "layers.3": 1.0}
    profiles = load_profiles(
        {
            "per_event": {"kind": "per_event", "e_event_pj": 1.0},
            "synops_45nm": {"kind": "synops", "e_ac_pj": 0.9, "e_mac_pj": 4.6},
        }
    )
    assert profiles["per_event"].energy_pj(counts) == pytest.approx(94.0)
    cost = 0.9 if op == "AC" else 4.6
    assert profiles["synops_45nm"].energy_pj(counts) == pytest.approx(cost * 472)
    assert profiles["synops_45nm"].energy_nj_per_sample(counts) == pytest.approx(cost * 472e-3)
    layers = profiles["synops_45nm"].layer_energy_nj_per_sample(counts)
    assert sum(layers.values()) == pytest.approx(cost * 472e-3)
    # what the input alone costs: its 2 x 3 messages, or the 2 x 38 synops they drive in conv1
    assert counts.input_layer == "layers.0"
    assert profiles["per_event"].input_energy_nj_per_sample(counts) == pytest.approx(6e-3)
    assert profiles["synops_45nm"].input_energy_nj_per_sample(counts) == pytest.approx(cost * 76e-3)
    # what a dense pass would do, and each layer's weights (its weight memory)
    # (conv1: 10 valid taps per axis, 100 per channel pair; conv2: 5 per axis at stride 2)
    assert [c.dense for c in counts.layers.values()] == [2 * 100 * 2, 2 * 25 * 6, 2 * 48]
    assert [c.weights for c in counts.layers.values()] == [18, 54, 48]
    assert counts.neuron_sizes == {"layers.1": 32, "layers.3": 12} and counts.neuron_updates == 88


MEMORY = {  # a small made-up chip: SRAM reads cost 2 pJ per 64 bits at 1 byte, 8 pJ at 1 KiB
    "kind": "memory",
    "e_ac_pj": 0.1,
    "e_mac_pj": 0.3,
    "e_leak_pj": 0.05,
    "e_message_pj": 0.5,
    "weight_bits": 8,
    "membrane_bits": 16,
    "sram_read_pj": {1: 2.0, 1024: 8.0},
}


def sram(size_bytes: float, bits: int) -> float:
    """The made-up SRAM by hand: log-log between (1 B, 2 pJ) and (1 KiB, 8 pJ) is 2 * size^0.2."""
    return 2.0 * size_bytes**0.2 * bits / 64


@pytest.mark.parametrize(("mode", "op"), [("binary", 0.1), ("graded", 0.3)])
def test_the_memory_aware_profile_by_hand(mode: str, op: float) -> None:
    """Weights read per synop from an SRAM the layer's size, membranes read and written and
    leaked per neuron and step, one address event per message; D (graded) under the same
    rules, its synops MACs."""
    net = tiny_net(mode)
    x = hand_input(steps=2)
    with torch.no_grad(), count_operations(net, input_events=mode == "binary") as counts:
        counts.input_events += input_event_count(x, mode == "binary")
        counts.samples, counts.timesteps = 1, 2
        net(x)
    profile = load_profiles({"chip": MEMORY})["chip"]
    assert profile.sram_pj(1024, 64) == pytest.approx(8.0) == profile.sram_pj(1e6, 64)  # clamped
    synops = (
        2 * 38 * (op + sram(18, 8)) + 2 * 150 * (op + sram(54, 8)) + 2 * 48 * (op + sram(48, 8))
    )
    updates = 64 * (2 * sram(32 * 2, 16) + 0.05) + 24 * (2 * sram(12 * 2, 16) + 0.05)
    messages = 0.5 * 2 * (3 + 32 + 12)
    assert profile.energy_pj(counts) == pytest.approx(synops + updates + messages)
    parts = profile.layer_energy_pj(counts)
    assert parts["input"] == pytest.approx(0.5 * 6)
    assert parts["layers.3"] == pytest.approx(24 * (2 * sram(24, 16) + 0.05) + 0.5 * 24)
    # the input alone: its messages and the synops they drive
    assert profile.input_energy_nj_per_sample(counts) == pytest.approx(
        (0.5 * 6 + 2 * 38 * (op + sram(18, 8))) / 1e3
    )


def test_the_bit_matched_ann_and_where_e_breaks_even() -> None:
    """The ANN does D's per-step operations once, as MACs of ceil(log2(T + 1)) bits (at most
    that many accumulates); E breaks even with it at the spike rate where its spike-driven part
    closes the gap above its fixed part."""
    direct, event = tiny_net("graded"), tiny_net("binary")
    x = hand_input(steps=2)
    counted = {}
    for name, net in (("direct", direct), ("event", event)):
        with torch.no_grad(), count_operations(net, input_events=name == "event") as counts:
            counts.input_events += input_event_count(x, name == "event")
            counts.samples, counts.timesteps = 1, 2
            net(x)
        counted[name] = counts
    profiles = load_profiles(
        {
            "per_event": {"kind": "per_event", "e_event_pj": 1.0},
            "synops_45nm": {"kind": "synops", "e_ac_pj": 0.9, "e_mac_pj": 4.6},
            "chip": MEMORY,
        }
    )
    assert bit_matched_bits(2) == 2 and bit_matched_bits(4) == 3 and bit_matched_bits(1) == 1
    per_event = profiles["per_event"].ann_energy_nj_per_sample(counted["direct"], 2)
    assert per_event == pytest.approx(94 / 2 / 1e3)  # D's 94 messages over 2 steps, once
    synops = profiles["synops_45nm"].ann_energy_nj_per_sample(counted["direct"], 2)
    assert synops == pytest.approx(min(4.6, 2 * 0.9) * 472 / 2 / 1e3)
    chip = profiles["chip"].ann_energy_nj_per_sample(counted["direct"], 2)
    reads = 38 * sram(18, 8) + 150 * sram(54, 8) + 48 * sram(48, 8)
    activations = 32 * 2 * sram(32 * 2 / 8, 2) + 12 * 2 * sram(12 * 2 / 8, 2)
    assert chip == pytest.approx((0.2 * 236 + reads + 0.5 * 47 + activations) / 1e3)
    # E: 94 pJ per_event, 6 of them the input's; every hidden neuron fires (rate 1.0)
    rate = break_even_rate(profiles["per_event"], counted["event"], per_event)
    assert rate == pytest.approx(1.0 * (47 - 6) / 88)
    assert break_even_rate(profiles["per_event"], counted["event"], 5e-3) is None  # below input


def test_the_energy_priced_penalty_is_the_energy_models_own_count() -> None:
    """Each LIF layer's cost per spike (its message plus the synops it drives next, with their
    weight reads) times its spikes sums to what the profile charges for the spikes, and the
    penalty is that over the cost of every neuron firing once."""
    net = tiny_net("binary")
    x = hand_input(steps=2)
    with torch.no_grad(), count_operations(net, input_events=True) as counts:
        counts.input_events += input_event_count(x, True)
        counts.samples = 1
        net(x)
    assert net.spike_targets() == [("layers.1", "layers.2"), ("layers.3", "layers.5")]
    profiles = load_profiles(
        {"synops_45nm": {"kind": "synops", "e_ac_pj": 0.9, "e_mac_pj": 4.6}, "chip": MEMORY}
    )
    # synops: LIF 1's 64 spikes drive conv2's 300 synops, LIF 2's 24 drive the readout's 96
    costs = spike_costs(profiles["synops_45nm"], counts, net.spike_targets())
    assert costs == pytest.approx([0.9 * 300 / 64, 0.9 * 96 / 24])
    spikes = [counts.neuron_events["layers.1"], counts.neuron_events["layers.3"]]
    spike_energy = profiles["synops_45nm"].energy_pj(counts) - 0.9 * 2 * 38  # not the input's
    assert sum(c * s for c, s in zip(costs, spikes, strict=True)) == pytest.approx(spike_energy)
    # memory: the message of each spike plus its synops with their weight reads
    chip = spike_costs(profiles["chip"], counts, net.spike_targets())
    assert chip == pytest.approx(
        [0.5 + 300 * (0.1 + sram(54, 8)) / 64, 0.5 + 96 * (0.1 + sram(48, 8)) / 24]
    )
    # the penalty: every neuron fires at every step here, so priced or not it is 1.0
    activity = [torch.ones(2, 1, 2, 4, 4), torch.ones(2, 1, 3, 2, 2)]
    assert float(mean_rate(activity, costs)) == pytest.approx(1.0)
    half = [activity[0] * 0.5, activity[1]]
    priced = (costs[0] * 32 + costs[1] * 24) / (costs[0] * 64 + costs[1] * 24)
    assert float(mean_rate(half, costs)) == pytest.approx(priced)
    assert float(mean_rate(half)) == pytest.approx((32 + 24) / 88)  # the rate penalty


def test_the_priced_penalty_pushes_on_costly_spikes_first() -> None:
    """Its gradient on each layer's spikes is that layer's cost (normalised): a spike of a layer
    costing 10x is pushed 10x harder; the rate penalty pushes every spike alike."""
    a = torch.full((2, 4, 8), 0.5, requires_grad=True)
    b = torch.full((2, 4, 8), 0.5, requires_grad=True)
    mean_rate([a, b], (10.0, 1.0)).backward()
    assert float(a.grad[0, 0, 0] / b.grad[0, 0, 0]) == pytest.approx(10.0)
    a.grad = b.grad = None
    mean_rate([a, b]).backward()
    assert float(a.grad[0, 0, 0] / b.grad[0, 0, 0]) == pytest.approx(1.0)


def test_event_counts_weigh_multiple_events() -> None:
    x = torch.zeros(1, 1, 1, 4, 4)
    x[0, 0, 0, 1, 1] = 3  # three events in one frame cell
    assert input_event_count(x, events=True) == 3
    assert input_event_count(x, events=False) == 1  # one analog message
    net = tiny_net("binary")
    with torch.no_grad(), count_operations(net, input_events=True) as counts:
        net(x)
    assert counts.layers["layers.0"].synops == 3 * 9 * 2


def test_bad_energy_profiles() -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        EnergyProfile("x", "per_joule")
    with pytest.raises(ValueError, match="e_event_pj"):
        EnergyProfile("x", "per_event")
    with pytest.raises(ValueError, match="unknown keys"):
        load_profiles({"x": {"kind": "per_event", "e_event_pj": 1, "e_spike": 2}})
    with pytest.raises(ValueError, match="No energy profiles"):
        load_profiles({})
    # a memory profile missing a coefficient is refused, naming it and where profiles live
    partial = {k: v for k, v in MEMORY.items() if k != "e_leak_pj"}
    with pytest.raises(ValueError, match=r"missing \['e_leak_pj'\].*parameters_energy.yml"):
        load_profiles({"chip": partial})
    with pytest.raises(ValueError, match="sram_read_pj"):
        load_profiles({"chip": {**MEMORY, "sram_read_pj": {}}})
