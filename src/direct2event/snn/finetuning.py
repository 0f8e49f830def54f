"""Regularised event-driven fine-tuning of network E (method step 5): BPTT with binary spikes
forward and the surrogate backward, loss ``CE + rate_lambda * mean spike rate`` (plus, when
distilling, ``KL(D || E)`` against frozen D).

:class:`FinetuneConfig` holds every setting of one fine-tuning; the pipelines build it once from
the validated parameters, so every fine-tuning of a run (the sweep's trials, the final one, the
ablation rows) trains exactly alike.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from direct2event.snn.encoders import InputCoding, encodes_events
from direct2event.snn.energy import EnergyProfile, spike_costs
from direct2event.snn.losses import TransferLoss
from direct2event.snn.models import SpikingNet
from direct2event.snn.ops import count_operations
from direct2event.snn.training import (
    Callback,
    FitConfig,
    Split,
    encoded_batches,
    fit,
    predict_logits,
)


@dataclass(frozen=True)
class FinetuneConfig:
    """One fine-tuning of E: its BPTT settings (``fit``, E's input coding inside), the rate
    penalty's strength, distillation from D (read with ``teacher`` coding), and which training
    samples (a seeded subset of ``max_train`` when set)."""

    fit: FitConfig
    rate_lambda: float
    distill: bool = True  # the method distils from D; False: cross-entropy alone
    teacher: InputCoding = field(default_factory=lambda: InputCoding("analog", 4))
    alpha: float = 0.4
    temperature: float = 2.0
    train_thresholds: bool = False
    max_train: int | None = None
    label: str = ""  # what the progress bar names first (the dataset)
    # the energy-priced penalty: spikes priced by this energy model, counted on the starting
    # E (PRICE_SAMPLES training samples) when the fine-tuning starts; None: the rate penalty
    price: EnergyProfile | None = None
    # those prices (pJ per spike, per LIF layer) when already counted: a fine-tuning taken on
    # from where it stopped must go on with the prices it started with, not count them again on
    # the network it stopped at, or it would not end as the uninterrupted one
    prices: tuple[float, ...] | None = None

    @property
    def desc(self) -> str:
        """The progress bar's label."""
        return f"{self.label} E λ={self.rate_lambda:.3g}".strip()

    def with_changes(self, **changes: object) -> FinetuneConfig:
        """A copy with ``changes``; ``epochs`` and ``coding`` change the BPTT settings."""
        fit_changes = {k: changes.pop(k) for k in ("epochs", "coding") if k in changes}
        fit_cfg = replace(self.fit, **fit_changes) if fit_changes else self.fit
        return replace(self, fit=fit_cfg, **changes)


def training_samples(train: Split, cfg: FinetuneConfig) -> Split:
    """The samples one fine-tuning trains on: all of ``train``, or a subset of ``max_train``
    drawn with the run's seed (the same subset for every fine-tuning of the run)."""
    limit = cfg.max_train
    if limit is None or limit >= len(train):
        return train
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.fit.seed))
    idx = pick[:limit].sort().values
    return Split(train.x[idx], train.y[idx])


PRICE_SAMPLES = 512  # training samples a layer's cost per spike is counted on


@torch.no_grad()
def spike_prices(
    model: SpikingNet, train: Split, cfg: FinetuneConfig, device: torch.device
) -> tuple[float, ...] | None:
    """pJ per spike of each LIF layer of ``model`` under ``cfg.price`` (None without one),
    counted on the first training samples: what the energy-priced penalty weighs spikes by."""
    if cfg.price is None:
        return None
    coding = cfg.fit.coding
    model.to(device).eval()
    with count_operations(model, input_events=encodes_events(coding.encoding)) as counts:
        for idx, x in encoded_batches(train.head(PRICE_SAMPLES), coding, device, seed=cfg.fit.seed):
            counts.samples += len(idx)
            model(x)
    return tuple(spike_costs(cfg.price, counts, model.spike_targets()))


def teacher_logits(
    direct_model: SpikingNet, train: Split, cfg: FinetuneConfig, device: torch.device
) -> Tensor:
    """D's logits on the fine-tuning samples, computed once and shared by every fine-tuning of
    a run that distils (D is frozen and its input deterministic: the same values each time)."""
    return predict_logits(direct_model, training_samples(train, cfg), cfg.teacher, device)


def finetune_event_network(
    event_model: SpikingNet,
    direct_model: SpikingNet,
    train: Split,
    cfg: FinetuneConfig,
    device: torch.device,
    logits: Tensor | None = None,
    val: Split | None = None,
    callbacks: Sequence[Callback] = (),
) -> tuple[SpikingNet, list[dict[str, float]]]:
    """E fine-tuned as ``cfg`` says (a copy; ``event_model`` itself is returned untouched when
    ``cfg.fit.epochs`` is 0), and its epoch history (validation accuracy on ``val`` when given).

    When distilling without shift augmentation, D's logits for the training samples
    (``logits``, from :func:`teacher_logits`; computed here when not given) are looked up per
    batch. ``train_thresholds``: E's per-channel thresholds are trained with the weights (kept
    at or above the floor) and fixed again afterwards. ``callbacks``: see
    :func:`direct2event.snn.training.fit`.
    """
    if cfg.fit.epochs == 0:
        return event_model, []
    train = training_samples(train, cfg)
    model = copy.deepcopy(event_model)
    teacher = copy.deepcopy(direct_model).to(device) if cfg.distill else None
    if teacher is None or cfg.fit.shift_augment != 0:
        logits = None
    elif logits is None:
        logits = predict_logits(teacher, train, cfg.teacher, device)
    elif len(logits) != len(train):
        raise ValueError(
            f"teacher logits have {len(logits)} rows for {len(train)} training samples; "
            "compute them with teacher_logits on the same training split and settings."
        )
    loss = TransferLoss(
        rate_lambda=cfg.rate_lambda,
        teacher=teacher,
        teacher_coding=cfg.teacher,
        alpha=cfg.alpha,
        temperature=cfg.temperature,
        teacher_logits=logits,
        layer_costs=cfg.prices
        if cfg.prices is not None
        else spike_prices(model, train, cfg, device),
    )
    if cfg.train_thresholds:
        for lif in model.lif_layers():
            lif.train_threshold(True)
    fit_cfg = replace(cfg.fit, desc=cfg.desc)
    history = fit(model, train, fit_cfg, device, val, extra_loss=loss, callbacks=callbacks)
    for lif in model.lif_layers():
        if isinstance(lif.threshold, torch.nn.Parameter):
            lif.train_threshold(False)
    return model, history
