"""A sweep trial of the lambda sweep as a function of lambda: fine-tune E for the trial's
epochs, measure it on the trials' validation samples, and take a chosen trial on to the full
fine-tuning. The sweep node (``nodes.tune_rate_lambda``) and the sweep workers call it."""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Callable
from typing import Any, NamedTuple

from torch import Tensor

from direct2event.data.splits import DataSplits
from direct2event.glue import tuning
from direct2event.glue.params import PipelineParams
from direct2event.snn.evaluation import EpochMeasure, measure
from direct2event.snn.finetuning import finetune_event_network, teacher_logits
from direct2event.snn.models import SpikingNet, checkpoint, restore
from direct2event.snn.training import EpochCallback, FitState, Split

logger = logging.getLogger(__name__)

# a trial's network, epoch history, (validation accuracy, energy), and where its fine-tuning
# stopped (to go on from there when it is chosen)
TrainedTrial = tuple[dict[str, Any], list[dict[str, float]], tuple[float, float], FitState]


def drop_dominated(trained: dict[float, TrainedTrial]) -> None:
    """Forget networks of trials another trial beats on validation accuracy and energy (only a
    Pareto-optimal trial can be chosen), so a long sweep holds few networks in memory."""
    keep = tuning.non_dominated({lam: entry[2] for lam, entry in trained.items()})
    for lam in set(trained) - keep:
        del trained[lam]


Complete = Callable[[float], tuple[SpikingNet, list[dict[str, float]], dict[str, float]]]


class TrialEvaluator(NamedTuple):
    """A sweep's trial as a function of lambda, D's validation accuracy on the trials'
    samples, a trial taken on to the full fine-tuning as a function of lambda, and D's energy
    on the trials' samples (the reference of an energy reduction target)."""

    evaluate: tuning.Evaluate
    direct_accuracy: float
    complete: Complete
    direct_energy: float  # D's energy per sample on the same samples (transfer.energy_model)


def trial_validation(splits: DataSplits, settings: PipelineParams) -> Split:
    """The validation samples every trial (and E at lambda = 0) is measured on: the first
    ``tuning.max_validation`` of the split."""
    return splits.validation.head(settings.tuning.max_validation or len(splits.validation))


def trial_evaluator(
    scaled: SpikingNet,
    direct: SpikingNet,
    splits: DataSplits,
    settings: PipelineParams,
    trained: dict[float, TrainedTrial] | None = None,
    logits: Tensor | None = None,
) -> TrialEvaluator:
    """One sweep trial as a function of lambda (fine-tune E for ``settings.trial_epochs`` of
    the fine-tuning's epochs, measure it on the validation split; with a judge, also at its
    early-stop checks), D's validation accuracy on the same samples (the retention reference),
    and the completion of a trial to the full fine-tuning.
    ``trained`` keeps, by lambda, the network and history of this run's trials that no other
    trial beats on both accuracy and energy: the chosen trial is always one of them.
    ``logits``: D's logits from :func:`predict_direct_logits` (computed by the first trial that
    distils when not given, then shared)."""
    device, profiles = settings.device, settings.profiles()
    val = trial_validation(splits, settings)
    energy_model = settings.transfer.energy_model
    direct_res = measure(direct, val, settings.direct_coding, device, profiles, settings.seed)
    direct_acc = direct_res["accuracy"]
    base = settings.finetune_config(0.0)
    distill = base.distill and base.fit.epochs > 0

    @functools.cache
    def shared_logits() -> Tensor:
        """D's logits for distillation: given, or computed by the first trial, then shared."""
        return logits if logits is not None else teacher_logits(direct, splits.train, base, device)

    def measured(net: SpikingNet) -> dict[str, float]:
        res = measure(net, val, settings.event_coding, device, profiles, settings.seed)
        return {
            "val_accuracy": res["accuracy"],
            "energy_uJ": res["energy_uJ_by_model"][energy_model],
            "events_per_sample": res["events_per_sample"],
            "accuracy_retention": res["accuracy"] / direct_acc if direct_acc > 0 else 0.0,
        }

    whole = len(val) == len(splits.validation)  # the epochs' validation is the trials' own

    def complete(lam: float) -> tuple[SpikingNet, list[dict[str, float]], dict[str, float]]:
        """The trial at ``lam`` taken on to the full fine-tuning (from where it stopped when this
        run trained it, else from the start: a trial of another worker), measured as a trial."""
        cfg = settings.finetune_config(lam)
        logits = shared_logits() if distill else None
        epochs = EpochMeasure(measured)
        validate = epochs if whole else None
        if lam in (trained or {}):
            model, before, _, state = trained[lam]
            net, after = finetune_event_network(
                restore(model), direct, splits.train, splits.validation, cfg, device, logits,
                state=copy.deepcopy(state), validate=validate,
            )  # fmt: skip
            history = [*before, *after]
        else:
            net, history = finetune_event_network(
                scaled, direct, splits.train, splits.validation, cfg, device, logits,
                validate=validate,
            )  # fmt: skip
        return net, history, epochs.final(net)

    def evaluate(
        lam: float, on_epoch: EpochCallback | None = None, judge: tuning.Judge | None = None
    ) -> dict[str, float]:
        on_step = None
        if judge is not None:
            checks: dict[int, float] = {}

            def on_step(net: SpikingNet, step: int, total: int) -> None:
                if step == 1:
                    checks.update(judge.steps(total))
                if step in checks:
                    judge(checks[step], step, measured(net))

        state, epochs = FitState(), EpochMeasure(measured)
        net, history = finetune_event_network(
            scaled,
            direct,
            splits.train,
            splits.validation,
            settings.finetune_config(lam),
            device,
            logits=shared_logits() if distill else None,
            on_epoch=on_epoch,
            on_step=on_step,
            stop_after=settings.trial_epochs,
            state=state,
            validate=epochs if whole else None,
        )
        res = epochs.final(net, trained_on=state.mid_epoch)
        if trained is not None:
            scores = (res["val_accuracy"], res["energy_uJ"])
            trained[lam] = (checkpoint(net), history, scores, copy.deepcopy(state))
            drop_dominated(trained)
        logger.info(
            "trial λ = %.4g: val accuracy %.4f, %.0f events/sample",
            lam,
            res["val_accuracy"],
            res["events_per_sample"],
        )
        return res

    return TrialEvaluator(
        evaluate, direct_acc, complete, direct_res["energy_uJ_by_model"][energy_model]
    )
