from __future__ import annotations

import torch

from direct2event.data.splits import DataSplits
from direct2event.pipelines.direct_training.nodes import train_direct_model
from direct2event.snn.encoders import InputCoding
from direct2event.snn.models import restore
from direct2event.snn.training import evaluate
from tests.pipelines.conftest import tiny


def test_train_direct_model_learns_logs_each_epoch_and_repeats_with_its_seed(
    digits_splits: DataSplits,
) -> None:
    settings = tiny(training={"epochs": 3})
    model, log = train_direct_model(digits_splits, settings)
    assert [h["epoch"] for h in log] == [1, 2, 3]
    assert {"train_loss", "train_accuracy", "val_accuracy"} <= set(log[0])
    assert log[-1]["train_loss"] < log[0]["train_loss"]
    net = restore(model)
    accuracy = evaluate(net, digits_splits.test, InputCoding("analog", 4), torch.device("cpu"))
    assert accuracy > 0.8
    assert 0.5 < log[-1]["val_accuracy"] <= 1
    same, _ = train_direct_model(digits_splits, settings)
    other, _ = train_direct_model(digits_splits, tiny(training={"epochs": 3}, seed=1))
    key = next(iter(model["state_dict"]))
    assert torch.equal(same["state_dict"][key], model["state_dict"][key])
    assert not torch.equal(other["state_dict"][key], model["state_dict"][key])


def test_a_network_near_chance_stops_the_run_naming_lr_and_epoch(
    digits_splits: DataSplits,
) -> None:
    """lr = 1000 leaves D at chance: the gate stops before calibration (nothing registered)."""
    import pytest

    from direct2event.pipelines.direct_training.nodes import QualityGateError, accuracy_floor

    assert accuracy_floor(10, 2.0) == pytest.approx(0.2)
    assert accuracy_floor(2, 2.0) == pytest.approx(0.75)  # capped halfway to 100 %
    with pytest.raises(QualityGateError) as err:
        train_direct_model(digits_splits, tiny(training={"epochs": 2, "lr": 1000.0}))
    text = str(err.value)
    assert "below the quality floor 20.00%" in text and "epoch 2" in text
    assert "digits.training.lr" in text and "learning rate 1000" in text
    # the gate can be turned off
    off = tiny(training={"epochs": 1, "lr": 1000.0, "min_accuracy_over_chance": 0})
    _, log = train_direct_model(digits_splits, off)
    assert log[-1]["val_accuracy"] < 0.3


def test_a_diverging_loss_stops_at_its_first_batch(digits_splits: DataSplits) -> None:
    import pytest

    from direct2event.pipelines.direct_training.nodes import QualityGateError

    with pytest.raises(QualityGateError) as err:
        train_direct_model(digits_splits, tiny(training={"epochs": 3, "lr": 1e12}))
    text = str(err.value)
    assert "the loss is nan in epoch 1 of 3" in text
    assert "digits.training.lr (now 1e+12)" in text
