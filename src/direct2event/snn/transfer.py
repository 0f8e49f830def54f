"""The transfer from network D to network E, step by step (library side of the pipeline nodes)."""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from direct2event.snn.calibration import (
    CalibrationMap,
    LayerStatistics,
    fit_calibration,
    layer_time_means,
)
from direct2event.snn.encoders import Encoding
from direct2event.snn.losses import TransferLoss
from direct2event.snn.models import SpikingNet, to_event_network
from direct2event.snn.thresholds import (
    THRESHOLD_MAX,
    THRESHOLD_MIN,
    ThresholdReport,
    scale_thresholds,
)
from direct2event.snn.training import EpochCallback, FitConfig, Split, fit, predict_logits


def lif_layer_names(model: SpikingNet) -> list[str]:
    lifs = {id(m) for m in model.lif_layers()}
    return [n for n, m in model.named_modules() if id(m) in lifs]


def calibrate(
    direct_model: SpikingNet,
    data: Split,
    direct_encoding: Encoding,
    direct_timesteps: int,
    event_encoding: Encoding,
    event_timesteps: int,
    device: torch.device,
    max_points: int = 200_000,
    seed: int = 0,
) -> tuple[list[CalibrationMap], list[LayerStatistics]]:
    """Fit ``g`` per layer from D (direct input) and naive E (unit thresholds, event input)."""
    naive = to_event_network(direct_model)
    direct_means = layer_time_means(
        direct_model, data, direct_encoding, direct_timesteps, device, seed=seed
    )
    event_means = layer_time_means(naive, data, event_encoding, event_timesteps, device, seed=seed)
    return fit_calibration(direct_means, event_means, lif_layer_names(naive), max_points, seed)


def closed_form_thresholds(stats: list[LayerStatistics]) -> list[Tensor]:
    """``theta0 = mean g(a) / mean a`` per channel (non-leaky IF with reset by subtraction)."""
    starts = []
    for s in stats:
        ratio = s.mapped_mean / s.direct_mean.clamp(min=1e-6)
        ratio = torch.where(s.mapped_mean > 0, ratio, torch.ones_like(ratio))
        starts.append(ratio.clamp(THRESHOLD_MIN, THRESHOLD_MAX))
    return starts


def build_event_network(
    direct_model: SpikingNet,
    stats: list[LayerStatistics],
    data: Split,
    event_encoding: Encoding,
    event_timesteps: int,
    device: torch.device,
    method: str = "isotonic",
    percentile: float = 99.9,
    iterations: int = 14,
    seed: int = 0,
) -> tuple[SpikingNet, list[ThresholdReport]]:
    """Network E from D with thresholds scaled on the calibration split."""
    event_model = to_event_network(direct_model)
    reports = scale_thresholds(
        event_model,
        data,
        event_encoding,
        event_timesteps,
        device,
        method,
        targets=[s.direct_mean for s in stats],
        starts=closed_form_thresholds(stats),
        percentile=percentile,
        iterations=iterations,
        seed=seed,
    )
    if method == "percentile":
        for report, s in zip(reports, stats, strict=True):
            report.target_rate = s.direct_mean
    return event_model, reports


def finetune_event_network(
    event_model: SpikingNet,
    direct_model: SpikingNet,
    train: Split,
    val: Split | None,
    cfg: FitConfig,
    device: torch.device,
    rate_lambda: float,
    distill: bool = False,
    direct_encoding: Encoding = "analog",
    direct_timesteps: int = 4,
    alpha: float = 0.4,
    temperature: float = 2.0,
    progress: bool = True,
    teacher_logits: Tensor | None = None,
    desc: str = "fine-tune",
    train_thresholds: bool = False,
    on_epoch: EpochCallback | None = None,
) -> tuple[SpikingNet, list[dict[str, float]]]:
    """BPTT of E (binary forward, surrogate backward) with the rate penalty (and distillation).

    When distilling without shift augmentation, D's logits for ``train`` (``teacher_logits``,
    from :func:`direct2event.snn.training.predict_logits`; computed here when not given) are
    looked up per batch: D is frozen and its input deterministic, so they are the same values.
    ``train_thresholds``: E's per-channel thresholds are trained with the weights (kept at or
    above the floor) and fixed again afterwards.
    """
    model = copy.deepcopy(event_model)
    teacher = copy.deepcopy(direct_model).to(device) if distill else None
    if teacher is None or cfg.shift_augment != 0:
        teacher_logits = None
    elif teacher_logits is None:
        teacher_logits = predict_logits(teacher, train, direct_encoding, direct_timesteps, device)
    elif len(teacher_logits) != len(train):
        raise ValueError(
            f"teacher_logits has {len(teacher_logits)} rows for {len(train)} training samples; "
            "compute them with predict_logits on the same training split."
        )
    loss = TransferLoss(
        rate_lambda=rate_lambda,
        teacher=teacher,
        teacher_encoding=direct_encoding,
        teacher_timesteps=direct_timesteps,
        alpha=alpha,
        temperature=temperature,
        teacher_logits=teacher_logits,
    )
    if train_thresholds:
        for lif in model.lif_layers():
            lif.train_threshold(True)
    history = fit(
        model,
        train,
        val,
        cfg,
        device,
        extra_loss=loss,
        progress=progress,
        desc=desc,
        on_epoch=on_epoch,
    )
    for lif in model.lif_layers():
        if isinstance(lif.threshold, torch.nn.Parameter):
            lif.train_threshold(False)
    return model, history
