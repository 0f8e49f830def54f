"""Live per-epoch tracking: each epoch reaches the MLflow run (a real sqlite store) as it ends."""

from __future__ import annotations

from pathlib import Path

import mlflow
import torch

from direct2event.glue.tracking import epoch_callbacks, epoch_logger, epoch_metrics, log_epochs
from direct2event.snn.encoders import InputCoding
from direct2event.snn.models import build_model
from direct2event.snn.training import Callback, FitConfig, FitLoop, Split, fit


def test_epoch_metrics_skip_non_finite_values_and_number_on() -> None:
    record = {"epoch": 2.0, "train_loss": 0.25, "val_accuracy": float("nan")}
    (metric,) = epoch_metrics(record, "finetune", offset=1)
    assert (metric.key, metric.value, metric.step) == ("finetune.train_loss", 0.25, 3)


def test_each_epoch_is_in_the_run_before_the_next_one_starts(tmp_path: Path) -> None:
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("tracking")  # not one an earlier test made active in another store
    assert epoch_logger("direct") is None  # no run: nothing to log to
    g = torch.Generator().manual_seed(0)
    data = Split((torch.rand(64, 1, 8, 8, generator=g) * 255).to(torch.uint8), torch.arange(64) % 3)
    net = build_model("convnet", (1, 8, 8), 3, channels=[4])
    cfg = FitConfig(
        epochs=3, lr=1e-2, batch_size=32, coding=InputCoding("analog", 2), progress=False
    )
    seen: list[list[int]] = []
    client = mlflow.MlflowClient()
    with mlflow.start_run() as run:

        class Look(Callback):  # after the logger: look at the store at once
            def on_epoch_end(self, loop: FitLoop, record: dict[str, float]) -> None:
                history = client.get_metric_history(run.info.run_id, "direct.train_loss")
                seen.append([m.step for m in history])

        callbacks = [*epoch_callbacks("direct"), Look()]  # what a training node hands fit
        history = fit(net, data, cfg, torch.device("cpu"), callbacks=callbacks)
        log_epochs(history, "finetune")
    assert seen == [[1], [1, 2], [1, 2, 3]]  # live: epoch k is stored when epoch k ends
    stored = client.get_metric_history(run.info.run_id, "finetune.mean_rate")
    assert [(m.step, m.value) for m in stored] == [(h["epoch"], h["mean_rate"]) for h in history]
