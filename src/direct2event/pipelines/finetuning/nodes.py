"""The Optuna sweep of lambda and the regularised event-driven fine-tuning (step 5) at the chosen
lambda. Every trial fine-tunes E at one lambda and measures it on the validation split (accuracy
up, energy down); the choice is the lowest-energy trial whose accuracy retention reaches
``tuning.retention_floor``. E fine-tuned at lambda = 0 is trained once per run: it is the sweep's
accuracy reference, the warm-up the trials continue from (``warmup_epochs``) and the ablation's
``finetune_lambda0`` row."""

from __future__ import annotations

import logging
from typing import Any

from torch import Tensor

from direct2event.data.splits import DataSplits
from direct2event.glue import tracking
from direct2event.glue.params import PipelineParams
from direct2event.glue.reports import TrialRecord, TuningReport
from direct2event.glue.sweep.tune import configured, tune
from direct2event.pipelines.finetuning.trials import TrialRunner
from direct2event.snn.finetuning import finetune_event_network, teacher_logits
from direct2event.snn.models import SpikingNet, checkpoint, restore

logger = logging.getLogger(__name__)


def predict_direct_logits(
    direct_model: dict[str, Any], splits: DataSplits, settings: PipelineParams
) -> dict[str, Tensor | None]:
    """D's logits on the fine-tuning samples, computed once per run for every fine-tuning that
    distils from D (sweep trials, the final fine-tuning, the ablation rows); ``None`` inside
    when none distils."""
    ft = settings.transfer.finetune
    needed = ft.epochs > 0 and (ft.distill or settings.transfer.ablation.ttfs_rows)
    if not needed:
        return {"logits": None}
    cfg = settings.finetune_config(0.0)
    return {"logits": teacher_logits(restore(direct_model), splits.train, cfg, settings.device)}


def finetune_lambda0(
    scaled_model: dict[str, Any],
    direct_model: dict[str, Any],
    splits: DataSplits,
    settings: PipelineParams,
    direct_logits: dict[str, Tensor | None],
) -> dict[str, Any]:
    """E fine-tuned as the sweep's trials are but without the rate penalty (lambda = 0), for
    ``transfer.finetune.warmup_epochs`` (the warm-up every trial then continues from) or, with no
    warm-up, for ``epochs``: ``{"rate_lambda": 0.0, "model", "history"}``. It is the ablation's
    lambda = 0 row and the sweep's accuracy reference. ``{}`` when neither the
    warm-up nor the ablation asks for it (turning the ablation off then saves its training)."""
    ft = settings.transfer.finetune
    if not (ft.warmup_epochs or settings.transfer.ablation.enabled):
        return {}
    net, history = finetune_event_network(
        restore(scaled_model),
        restore(direct_model),
        splits.train,
        settings.finetune_config(0.0).with_changes(epochs=ft.warmup_epochs or ft.epochs),
        settings.device,
        logits=direct_logits["logits"] if ft.distill else None,
        val=splits.validation,
        callbacks=tracking.epoch_callbacks("finetune_lambda0"),
    )
    return {"rate_lambda": 0.0, "model": checkpoint(net.cpu()), "history": history}


def start_network(
    scaled_model: dict[str, Any], lambda0_event_model: dict[str, Any], settings: PipelineParams
) -> tuple[SpikingNet, list[dict[str, float]]]:
    """Where every lambda's fine-tuning starts, and the epochs already behind it: the warm-up
    at lambda = 0 when ``warmup_epochs`` > 0, else the threshold-scaled network."""
    if settings.transfer.finetune.warmup_epochs:
        return restore(lambda0_event_model["model"]), lambda0_event_model["history"]
    return restore(scaled_model), []


def joined(before: list[dict[str, float]], after: list[dict[str, float]]) -> list[dict[str, float]]:
    """One epoch log for E: the warm-up's epochs, then the penalised ones, numbered on."""
    return [*before, *({**h, "epoch": h["epoch"] + len(before)} for h in after)]


def tune_rate_lambda(
    scaled_model: dict[str, Any],
    direct_model: dict[str, Any],
    splits: DataSplits,
    settings: PipelineParams,
    direct_logits: dict[str, Tensor | None],
    lambda0_event_model: dict[str, Any],
) -> tuple[TuningReport, dict[str, dict], dict[str, Any]]:
    """The sweep's report, its metrics, and the chosen network when this run trained it (``{}``
    otherwise): a trial fine-tunes exactly as the final fine-tuning does, so that node can reuse
    it. E at lambda = 0 (``lambda0_event_model``), measured like a trial, is reported beside
    the trials as the accuracy the penalty trades against; it is not a candidate."""
    if not settings.tuning.enabled:
        lam = settings.transfer.finetune.rate_lambda
        return configured(lam, enabled=False), {}, {}
    start, warmup = start_network(scaled_model, lambda0_event_model, settings)
    runner = TrialRunner(start, restore(direct_model), splits, settings, direct_logits["logits"])
    lambda0 = None
    if lambda0_event_model:
        res = runner.measured(restore(lambda0_event_model["model"]))
        lambda0 = TrialRecord(rate_lambda=0.0, **{k: res[k] for k in ("val_accuracy", "energy_nJ")})
    outcome = tune(
        settings.sweep_config(),
        runner,
        settings.transfer.finetune.rate_lambda,
        lambda0,
        epoch_offset=len(warmup),
    )
    chosen = outcome.chosen
    reuse = {}
    if chosen is not None:
        reuse = {"rate_lambda": outcome.report.rate_lambda, "model": chosen[0]}
        reuse["history"] = joined(warmup, chosen[1])
    return outcome.report, outcome.metrics, reuse


def finetune_event_model(
    scaled_model: dict[str, Any],
    direct_model: dict[str, Any],
    splits: DataSplits,
    settings: PipelineParams,
    tuning_report: TuningReport,
    tuned_event_model: dict[str, Any],
    direct_logits: dict[str, Tensor | None],
    lambda0_event_model: dict[str, Any],
) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """Step 5: event-driven fine-tuning of E with ``CE + lambda * mean spike rate`` at the lambda
    the sweep chose (``transfer.finetune.rate_lambda`` when the sweep is off), after the
    lambda = 0 warm-up when configured. When the sweep trained that very network in this run
    (same lambda, settings and seed), it is taken as it is instead of being trained again."""
    rate_lambda = tuning_report.rate_lambda
    if tuned_event_model and tuned_event_model["rate_lambda"] == rate_lambda:
        logger.info(
            "Network E for λ = %.4g taken from the sweep's trial (not trained twice)", rate_lambda
        )
        tracking.log_epochs(tuned_event_model["history"], "finetune")
        return tuned_event_model["model"], tuned_event_model["history"]
    start, warmup = start_network(scaled_model, lambda0_event_model, settings)
    tracking.log_epochs(warmup, "finetune")
    net, history = finetune_event_network(
        start,
        restore(direct_model),
        splits.train,
        settings.finetune_config(rate_lambda),
        settings.device,
        logits=direct_logits["logits"] if settings.transfer.finetune.distill else None,
        val=splits.validation,
        callbacks=tracking.epoch_callbacks("finetune", offset=len(warmup)),
    )
    return checkpoint(net.cpu()), joined(warmup, history)
