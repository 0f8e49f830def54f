from __future__ import annotations

import torch

from direct2event.snn.encoders import InputCoding
from direct2event.snn.evaluation import EpochMeasure
from direct2event.snn.models import build_model
from direct2event.snn.training import FitConfig, FitState, evaluate, fit


def test_a_trial_stopped_inside_an_epoch_is_measured_where_it_stopped(digits_splits) -> None:
    """A trial's measurement is its last epoch's validation, except when it trained on past
    that epoch's end (``stop_after`` = 1.5): then the network as it stopped is measured."""
    coding, cpu = InputCoding("rate", 4), torch.device("cpu")
    val = digits_splits.validation
    calls: list[float] = []

    def measured(net) -> dict[str, float]:
        calls.append(evaluate(net, val, coding, cpu))
        return {"val_accuracy": calls[-1]}

    torch.manual_seed(0)
    net = build_model("convnet", digits_splits.input_shape, 10, channels=(8, 16))
    cfg = FitConfig(epochs=2, lr=1e-2, batch_size=64, coding=coding, seed=0)
    epochs, state = EpochMeasure(measured), FitState()
    history = fit(
        net, digits_splits.train, val, cfg, cpu, progress=False, stop_after=1.5,
        state=state, validate=epochs,
    )  # fmt: skip
    assert len(history) == 1 and state.mid_epoch and len(calls) == 1
    at_epoch_end = epochs.final(net)
    assert at_epoch_end["val_accuracy"] == history[0]["val_accuracy"] and len(calls) == 1
    now = epochs.final(net, trained_on=True)
    assert len(calls) == 2 and now["val_accuracy"] == evaluate(net, val, coding, cpu)
