"""BPTT settings from validated parameters, and the event-driven fine-tuning of network E.

Shared by the stages that fine-tune E (the sweep's trials, the final fine-tuning, the ablation
rows), so all of them train exactly alike: same samples, settings and seed.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from direct2event.params import FinetuneParams, PipelineParams, TrainingParams
from direct2event.snn.encoders import Encoding, InputCoding
from direct2event.snn.models import SpikingNet
from direct2event.snn.training import (
    EpochCallback,
    FitConfig,
    Split,
    predict_logits,
    resolve_device,
)
from direct2event.snn.transfer import finetune_event_network


def device_of(params: PipelineParams) -> torch.device:
    """The torch device named by ``training.device`` (auto: CUDA when present)."""
    return resolve_device(params.training.device)


def fit_config(
    section: TrainingParams | FinetuneParams,
    coding: InputCoding,
    seed: int,
    bf16: bool,
    shift_augment: int = 0,
) -> FitConfig:
    """The BPTT settings of D's training or E's fine-tuning (the two share these fields)."""
    return FitConfig(
        epochs=section.epochs,
        lr=section.lr,
        batch_size=section.batch_size,
        timesteps=coding.timesteps,
        encoding=coding.encoding,
        weight_decay=section.weight_decay,
        optimizer=section.optimizer,
        schedule=section.schedule,
        shift_augment=shift_augment,
        seed=seed,
        bf16=bf16,
    )


def finetune_split(train: Split, params: PipelineParams) -> Split:
    """The training samples of one fine-tuning run (a seeded subset when ``max_train`` is set)."""
    limit = params.transfer.finetune.max_train
    if limit is not None and limit < len(train):
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(params.seed))
        idx = pick[:limit].sort().values
        train = Split(train.x[idx], train.y[idx])
    return train


def teacher_logits(direct: SpikingNet, train: Split, params: PipelineParams) -> Tensor:
    """D's logits on the fine-tuning samples, computed once and shared by runs that distil."""
    coding = params.direct_coding
    return predict_logits(
        direct,
        finetune_split(train, params),
        coding.encoding,
        coding.timesteps,
        device_of(params),
    )


def finetune(
    scaled: SpikingNet,
    direct: SpikingNet,
    train: Split,
    validation: Split | None,
    params: PipelineParams,
    rate_lambda: float,
    encoding: Encoding | None = None,
    distill: bool | None = None,
    logits: Tensor | None = None,
    epochs: int | None = None,
    on_epoch: EpochCallback | None = None,
) -> tuple[SpikingNet, list[dict[str, float]]]:
    """Fine-tune E as configured with strength ``rate_lambda``; ``encoding``, ``distill`` and
    ``epochs`` override the configuration (the TTFS ablation rows, the lambda = 0 warm-up);
    ``logits`` (from :func:`teacher_logits`) saves recomputing D's logits."""
    ft = params.transfer.finetune
    epochs = ft.epochs if epochs is None else epochs
    if epochs == 0:
        return scaled, []
    coding = InputCoding(encoding or params.event_coding.encoding, params.event_coding.timesteps)
    cfg = replace(fit_config(ft, coding, params.seed, params.training.bf16), epochs=epochs)
    teacher = params.direct_coding
    return finetune_event_network(
        scaled,
        direct,
        finetune_split(train, params),
        validation,
        cfg,
        device_of(params),
        rate_lambda,
        ft.distill if distill is None else distill,
        teacher.encoding,
        teacher.timesteps,
        ft.alpha,
        ft.temperature,
        progress=params.training.progress,
        teacher_logits=logits,
        desc=f"{params.dataset} E λ={rate_lambda:.3g}",
        train_thresholds=ft.train_thresholds,
        on_epoch=on_epoch,
    )
