from __future__ import annotations

import torch

from direct2event.data.splits import DataSplits
from direct2event.pipelines.direct_training.nodes import train_direct_model
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
    accuracy = evaluate(net, digits_splits.test, "analog", 4, torch.device("cpu"))
    assert accuracy > 0.8
    assert 0.5 < log[-1]["val_accuracy"] <= 1
    same, _ = train_direct_model(digits_splits, settings)
    other, _ = train_direct_model(digits_splits, tiny(training={"epochs": 3}, seed=1))
    key = next(iter(model["state_dict"]))
    assert torch.equal(same["state_dict"][key], model["state_dict"][key])
    assert not torch.equal(other["state_dict"][key], model["state_dict"][key])
