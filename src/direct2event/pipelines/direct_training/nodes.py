"""Network D: surrogate-gradient BPTT on direct (analog) input, or a registered network."""

from __future__ import annotations

import logging
from typing import Any

import torch

from direct2event import registry, tracking
from direct2event.data.splits import DataSplits
from direct2event.finetuning import device_of, fit_config
from direct2event.params import PipelineParams
from direct2event.snn.models import build_model, checkpoint
from direct2event.snn.neurons import LIFParameters
from direct2event.snn.training import fit

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
    device = device_of(settings)
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
    cfg = fit_config(train, settings.direct_coding, settings.seed, train.bf16, train.shift_augment)
    logger.info("Training network D (%s) on %s for %d epochs", model.arch, device, train.epochs)
    history = fit(
        net,
        splits.train,
        splits.validation,
        cfg,
        device,
        progress=train.progress,
        desc=f"{splits.name} D",
        on_epoch=tracking.epoch_logger("direct"),
    )
    return checkpoint(net.cpu()), history
