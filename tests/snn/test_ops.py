from __future__ import annotations

import pytest
import torch
from torch import nn

from direct2event.snn.energy import EnergyProfile, load_profiles
from direct2event.snn.models import SpikingNet
from direct2event.snn.neurons import LIF, LIFParameters
from direct2event.snn.ops import conv_fanout, count_operations, input_event_count


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
    assert profiles["synops_45nm"].energy_nj_per_sample(counts) == pytest.approx(cost * 472e-6)
    layers = profiles["synops_45nm"].layer_energy_nj_per_sample(counts)
    assert sum(layers.values()) == pytest.approx(cost * 472e-6)
    # what the input alone costs: its 2 x 3 messages, or the 2 x 38 synops they drive in conv1
    assert counts.input_layer == "layers.0"
    assert profiles["per_event"].input_energy_nj_per_sample(counts) == pytest.approx(6e-6)
    assert profiles["synops_45nm"].input_energy_nj_per_sample(counts) == pytest.approx(cost * 76e-6)


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
