"""Thin Kedro nodes of the per-dataset template pipeline: each calls the library and returns data."""

from __future__ import annotations

import logging
import math
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from direct2event.data.containers import RawData  # noqa: E402
from direct2event.data.kedro_datasets import EventSource  # noqa: E402
from direct2event.data.splits import DataSplits, make_splits  # noqa: E402
from direct2event.params import DataParams, ModelParams, TrainingParams  # noqa: E402
from direct2event.snn.models import SpikingNet, build_model, model_from_config  # noqa: E402
from direct2event.snn.neurons import LIFParameters  # noqa: E402
from direct2event.snn.training import FitConfig, evaluate, fit, resolve_device  # noqa: E402

logger = logging.getLogger(__name__)


def direct_encoding(splits: DataSplits) -> str:
    """How network D sees the data: analog images, or event frames fed as analog values."""
    return "frames" if splits.kind == "events" else "direct"


def prepare_data(
    raw_data: RawData | EventSource, data: dict[str, Any], model: dict[str, Any]
) -> DataSplits:
    """Bin events to ``timesteps`` frames when needed and split with a fixed seed."""
    data_p, model_p = DataParams(**data), ModelParams(**model)
    raw = raw_data.frames(model_p.timesteps) if isinstance(raw_data, EventSource) else raw_data
    splits = make_splits(
        raw,
        data_p.calibration_fraction,
        data_p.validation_fraction,
        data_p.seed,
        data_p.max_train,
        data_p.max_validation,
        data_p.max_test,
    )
    logger.info("%s splits: %s (input %s)", splits.name, splits.sizes(), splits.input_shape)
    return splits


def _fit_config(training: TrainingParams, model: ModelParams, encoding: str) -> FitConfig:
    return FitConfig(
        epochs=training.epochs,
        lr=training.lr,
        batch_size=training.batch_size,
        timesteps=model.timesteps,
        encoding=encoding,  # type: ignore[arg-type]
        weight_decay=training.weight_decay,
        optimizer=training.optimizer,
        schedule=training.schedule,
        shift_augment=training.shift_augment,
        seed=training.seed,
    )


def checkpoint(model: SpikingNet) -> dict[str, Any]:
    """What is saved of a network: its architecture config and weights (CPU tensors)."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return {"config": model.config, "state_dict": state, "mode": model.mode}


def restore(saved: dict[str, Any]) -> SpikingNet:
    """Rebuild a network from :func:`checkpoint`'s output."""
    net = model_from_config(saved["config"])
    if saved.get("event", False):
        from direct2event.snn.models import fuse_batchnorm

        fuse_batchnorm(net)
    net.load_state_dict(saved["state_dict"])
    return net.set_mode(saved.get("mode", "graded"))


def training_curve(history: list[dict[str, float]], title: str) -> Figure:
    """Loss and accuracy per epoch."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
    epochs = [h["epoch"] for h in history]
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy")
    ax_acc.plot(epochs, [h["train_accuracy"] for h in history], "o-", label="train")
    if all("val_accuracy" in h for h in history):
        ax_acc.plot(epochs, [h["val_accuracy"] for h in history], "s-", label="validation")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    ax_acc.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def history_metrics(history: list[dict[str, float]], prefix: str) -> dict[str, list[dict]]:
    """Per-epoch records in kedro-mlflow's metrics-history format (step = epoch)."""
    keys = [k for k in history[0] if k != "epoch"] if history else []
    return {
        f"{prefix}.{k}": [{"value": float(h[k]), "step": int(h["epoch"])} for h in history]
        for k in keys
        if all(math.isfinite(h.get(k, float("nan"))) for h in history)
    }


def train_direct_model(
    splits: DataSplits, model: dict[str, Any], training: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, list[dict]], Figure]:
    """Surrogate-gradient BPTT of network D on direct (analog) input."""
    model_p, train_p = ModelParams(**model), TrainingParams(**training)
    device = resolve_device(train_p.device)
    torch.manual_seed(train_p.seed)
    net = build_model(
        model_p.arch,
        splits.input_shape,
        splits.classes,
        LIFParameters(beta=model_p.beta, width=model_p.surrogate_width, reset=model_p.reset),
        model_p.channels,
        model_p.hidden,
    )
    logger.info("Training network D (%s) on %s for %d epochs", model_p.arch, device, train_p.epochs)
    history = fit(
        net,
        splits.train,
        splits.validation,
        _fit_config(train_p, model_p, direct_encoding(splits)),
        device,
        progress=train_p.progress,
        desc=f"{splits.name} direct",
    )
    for h in history:
        logger.info("epoch %d: %s", int(h["epoch"]), {k: round(v, 4) for k, v in h.items()})
    return (
        checkpoint(net.cpu()),
        history_metrics(history, "direct"),
        training_curve(history, f"Network D on {splits.name}"),
    )


def evaluate_direct_model(
    direct_model: dict[str, Any], splits: DataSplits, model: dict[str, Any], training: dict[str, Any]
) -> dict[str, float]:
    """Test accuracy of network D with direct input."""
    model_p, train_p = ModelParams(**model), TrainingParams(**training)
    net = restore(direct_model)
    acc = evaluate(
        net, splits.test, direct_encoding(splits), model_p.timesteps, resolve_device(train_p.device)
    )
    logger.info("Network D test accuracy on %s: %.4f", splits.name, acc)
    return {"accuracy": acc}


def build_summary(
    dataset: str, splits: DataSplits, model: dict[str, Any], direct_evaluation: dict[str, float]
) -> tuple[dict[str, Any], dict[str, dict]]:
    """The run's report (``summary.json``), built in this one place, and its MLflow metrics."""
    summary: dict[str, Any] = {
        "dataset": dataset,
        "simulated": bool(splits.simulated),
        "timesteps": int(ModelParams(**model).timesteps),
        "splits": splits.sizes(),
        "direct": {"accuracy": float(direct_evaluation["accuracy"])},
    }
    metrics = {"direct.test_accuracy": {"value": summary["direct"]["accuracy"], "step": 0}}
    return summary, metrics
