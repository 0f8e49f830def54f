"""Network D: surrogate-gradient BPTT on direct (analog) input, or a registered network."""

from __future__ import annotations

import logging
from typing import Any

import torch

from direct2event.data.splits import DataSplits
from direct2event.glue import registry, tracking
from direct2event.glue.params import PipelineParams
from direct2event.snn.models import build_model, checkpoint
from direct2event.snn.neurons import LIFParameters
from direct2event.snn.training import TrainingDiverged, fit

logger = logging.getLogger(__name__)


def _load_registered(splits: DataSplits, settings: PipelineParams) -> dict[str, Any]:
    """Network D from the model registry or a NIR file, checked against the data it will see."""
    uri = registry.check_source(str(settings.source_model), settings.dataset, settings.model)
    net = (
        registry.load_nir(uri, settings.model)
        if uri.startswith(registry.NIR_PREFIX)
        else registry.load(uri)
    )
    expected = (list(splits.input_shape), splits.classes)
    found = (list(net.config["input_shape"]), net.config["classes"])
    if found != expected:
        raise registry.RegistryError(
            f"{uri} takes input {found[0]} with {found[1]} classes; {splits.name} has "
            f"input {expected[0]} with {expected[1]} classes."
        )
    logger.info("Network D loaded from %s; training skipped", uri)
    return checkpoint(net)


def train_direct_model(
    splits: DataSplits, settings: PipelineParams
) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """Network D and its per-epoch log (empty when ``source_model`` names a registered D)."""
    if settings.source_model is not None:
        return _load_registered(splits, settings), []
    model, train = settings.model, settings.training
    device = settings.device
    torch.manual_seed(settings.seed)
    net = build_model(
        model.arch,
        splits.input_shape,
        splits.classes,
        LIFParameters(beta=model.beta, width=model.surrogate_width, reset=model.reset),
        model.channels,
        model.hidden,
        model.pooling,
    )
    cfg = settings.direct_fit_config()
    logger.info("Training network D (%s) on %s for %d epochs", model.arch, device, train.epochs)
    try:
        history = fit(
            net,
            splits.train,
            cfg,
            device,
            splits.validation,
            callbacks=tracking.epoch_callbacks("direct"),
        )
    except TrainingDiverged as err:
        raise QualityGateError(
            f"Network D of {settings.dataset} diverged: {err} Set a lower "
            f"{settings.dataset}.training.lr (now {train.lr:g}); nothing is calibrated or "
            "registered."
        ) from None
    check_quality(history, splits.classes, settings)
    return checkpoint(net.cpu()), history


class QualityGateError(RuntimeError):
    """Network D is not worth transferring (non-finite loss, accuracy near chance): the run
    stops before calibration, so no broken network is registered or made champion."""


def accuracy_floor(classes: int, over_chance: float) -> float:
    """``over_chance`` times chance accuracy, at most halfway from chance to 100 %."""
    chance = 1.0 / classes
    return min(over_chance * chance, (1.0 + chance) / 2)


def check_quality(history: list[dict[str, float]], classes: int, settings: PipelineParams) -> None:
    """Raise :class:`QualityGateError` when D's last validation accuracy is below the floor
    (``training.min_accuracy_over_chance``), naming the learning rate and the epoch."""
    over = settings.training.min_accuracy_over_chance
    if over <= 0 or not history or "val_accuracy" not in history[-1]:
        return
    floor = accuracy_floor(classes, over)
    best = max(history, key=lambda r: r["val_accuracy"])
    last = history[-1]
    if last["val_accuracy"] < floor:
        key = settings.dataset
        raise QualityGateError(
            f"Network D of {key} reaches {last['val_accuracy']:.2%} validation accuracy after "
            f"epoch {int(last['epoch'])} (best {best['val_accuracy']:.2%} in epoch "
            f"{int(best['epoch'])}), below the quality floor {floor:.2%} "
            f"({over:g} x chance, {key}.training.min_accuracy_over_chance) at learning rate "
            f"{settings.training.lr:g} ({key}.training.lr). Lower the learning rate or train "
            "longer; nothing is calibrated or registered."
        )
