"""NeuroBench's metrics, computed by the neurobench package on our networks, against our own
counts on the same forward passes: equal where the definitions match, and the one difference
(count-valued input) shown with values."""

from __future__ import annotations

import copy
import logging

import pytest
import torch

from direct2event.data.splits import DataSplits
from direct2event.glue import neurobench
from direct2event.snn.encoders import InputCoding
from direct2event.snn.evaluation import measure_counts
from direct2event.snn.models import SpikingNet, build_model, to_event_network
from direct2event.snn.training import Split

CPU = torch.device("cpu")


def weights(net: SpikingNet) -> list[torch.Tensor]:
    return [m.weight for m in net.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]


def test_neurobench_counts_equal_ours_on_digits(digits_direct_model, digits_splits: DataSplits):
    test = digits_splits.test
    event = to_event_network(copy.deepcopy(digits_direct_model))
    for net, coding in ((digits_direct_model, InputCoding("analog", 4)),
                        (event, InputCoding("rate", 4))):  # fmt: skip
        ours, counts = measure_counts(net, test, coding, CPU, {}, seed=0)
        theirs = neurobench.neurobench_metrics(net, test, coding, CPU, seed=0)
        assert theirs is not None
        if coding.encoding == "analog":  # D: analog input, graded outputs: every synop a MAC
            assert theirs["effective_macs"] == pytest.approx(ours["mac_per_sample"], rel=1e-9)
            assert theirs["effective_acs"] == 0 == ours["ac_per_sample"]
        else:  # E: binary spikes in every layer: every synop an AC
            assert theirs["effective_acs"] == pytest.approx(ours["ac_per_sample"], rel=1e-9)
            assert theirs["effective_macs"] == 0 == ours["mac_per_sample"]
        # dense: every synapse at every step, what our counter records alongside
        dense = sum(c.dense for c in counts.layers.values()) / counts.samples
        assert theirs["dense"] == pytest.approx(dense, rel=1e-9)
        # activation sparsity: the zero outputs of the LIF layers over all of them
        fired, steps = sum(counts.neuron_events.values()), counts.neuron_updates
        assert theirs["activation_sparsity"] == pytest.approx(1 - fired / steps, rel=1e-9)
        # membrane updates: every neuron's first step, then every step that changed it
        assert 0 < theirs["membrane_updates"] <= steps / counts.samples
        size = sum(p.numel() * p.element_size() for p in [*net.parameters(), *net.buffers()])
        assert theirs["footprint_bytes"] == size
        zeros = sum(int((w == 0).sum()) for w in weights(net))
        assert theirs["connection_sparsity"] == round(
            zeros / sum(w.numel() for w in weights(net)), 3
        )
    # E's every neuron updates at every step (it leaks or integrates): NeuroBench counts them all
    assert theirs["membrane_updates"] == pytest.approx(counts.neuron_updates / counts.samples)


def test_count_frames_are_macs_to_neurobench_and_weighted_acs_to_us() -> None:
    """A frame cell holding 3 events: NeuroBench books the first layer's operations as MACs
    counted once per non-zero cell; our counts make it 3 ACs (the energy models use ours)."""
    torch.manual_seed(0)
    frames = torch.randint(0, 4, (16, 2, 2, 8, 8)).float()  # [N, T, polarity, H, W], counts 0-3
    split = Split(frames, torch.zeros(16, dtype=torch.long))
    net = build_model("convnet", (2, 8, 8), 10, channels=(4, 8)).set_mode("binary").eval()
    coding = InputCoding("frames", 2)
    ours, counts = measure_counts(net, split, coding, CPU, {}, seed=0)
    theirs = neurobench.neurobench_metrics(net, split, coding, CPU, seed=0)
    first = counts.layers[counts.input_layer]
    _, binary_counts = measure_counts(net, Split(frames.clamp(max=1), split.y), coding, CPU,
                                           {}, seed=0)  # fmt: skip
    first_once = binary_counts.layers[binary_counts.input_layer]
    assert first.op == "AC" and first.synops > first_once.synops  # weighted by events
    # NeuroBench: the first layer's non-zero cells once each, as MACs; the rest ACs as ours
    assert theirs["effective_macs"] == pytest.approx(first_once.synops / 16, rel=1e-9)
    assert theirs["effective_acs"] == pytest.approx(
        (counts.ac - first.synops) / counts.samples, rel=1e-9
    )
    assert ours["ac_per_sample"] == pytest.approx(counts.ac / 16)


def test_without_neurobench_the_metrics_are_skipped_with_one_line(
    monkeypatch, digits_direct_model, digits_splits: DataSplits, caplog
) -> None:
    monkeypatch.setattr(neurobench, "available", lambda: False)
    with caplog.at_level(logging.INFO, logger="direct2event.glue.neurobench"):
        out = neurobench.neurobench_metrics(
            digits_direct_model, digits_splits.test, InputCoding("analog", 4), CPU
        )
    assert out is None
    (line,) = [r.getMessage() for r in caplog.records]
    assert "NeuroBench metrics skipped" in line and "pip install --no-deps neurobench" in line
