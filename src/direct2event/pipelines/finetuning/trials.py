"""A sweep trial of the lambda sweep as a function of lambda: fine-tune E for the trial's
epochs, measure it on the trials' validation samples, and take a chosen trial on to the full
fine-tuning. The sweep (:func:`direct2event.glue.sweep.tune.tune`) and sweep workers call it."""

from __future__ import annotations

import copy
import functools
import logging
from typing import Any, NamedTuple

from torch import Tensor

from direct2event.data.splits import DataSplits
from direct2event.glue.params import PipelineParams
from direct2event.glue.sweep.callbacks import Checks, FitState, MeasureEpochs, Resume, StopAfter
from direct2event.glue.sweep.early_stop import Judge
from direct2event.glue.sweep.policy import non_dominated
from direct2event.snn.evaluation import measure
from direct2event.snn.finetuning import (
    finetune_event_network,
    spike_prices,
    teacher_logits,
    training_samples,
)
from direct2event.snn.models import SpikingNet, checkpoint, restore
from direct2event.snn.training import Callback, Split

logger = logging.getLogger(__name__)


class TrainedTrial(NamedTuple):
    """A trial this run trained: its network, epoch history, (validation accuracy, energy),
    and where its fine-tuning stopped (to go on from there when it is chosen)."""

    model: dict[str, Any]
    history: list[dict[str, float]]
    scores: tuple[float, float]
    state: FitState


def trial_validation(splits: DataSplits, settings: PipelineParams) -> Split:
    """The validation samples every trial (and E at lambda = 0) is measured on: the first
    ``tuning.max_validation`` of the split."""
    return splits.validation.head(settings.tuning.max_validation or len(splits.validation))


class TrialRunner:
    """The sweep's trials on one run's networks. A trial fine-tunes E from ``start`` at one
    lambda for ``settings.trial_epochs`` of the fine-tuning's epochs (checked by a judge at its
    early-stop fractions) and is measured on :func:`trial_validation`; D is measured on the
    same samples once (the retention and energy reference).

    The networks of this run's trials that no other trial beats on both accuracy and energy
    are kept (the chosen trial is always one of them), so a chosen trial goes on from where it
    stopped instead of being trained again. ``logits``: D's logits from
    ``predict_direct_logits`` (computed by the first trial that distils when not given)."""

    def __init__(
        self,
        start: SpikingNet,
        direct: SpikingNet,
        splits: DataSplits,
        settings: PipelineParams,
        logits: Tensor | None = None,
    ) -> None:
        self.start, self.direct, self.splits, self.settings = start, direct, splits, settings
        self._logits = logits
        self.trained: dict[float, TrainedTrial] = {}
        self.val = trial_validation(splits, settings)
        self.validation_size = len(self.val)
        self.whole = len(self.val) == len(splits.validation)  # epochs' validation is the trials'
        energy_model = settings.transfer.energy_model
        res = measure(
            direct, self.val, settings.direct_coding, settings.device, settings.profiles(),
            settings.seed,
        )  # fmt: skip
        self.direct_accuracy = res["accuracy"]
        self.direct_energy = res["energy_nJ_by_model"][energy_model]
        base = settings.finetune_config(0.0)
        self.distill = base.distill and base.fit.epochs > 0

    @functools.cached_property
    def shared_logits(self) -> Tensor:
        """D's logits for distillation: given, or computed by the first trial, then shared."""
        if self._logits is not None:
            return self._logits
        cfg = self.settings.finetune_config(0.0)
        return teacher_logits(self.direct, self.splits.train, cfg, self.settings.device)

    def measured(self, net: SpikingNet) -> dict[str, float]:
        """A network as a trial reports it, on the trials' validation samples."""
        s = self.settings
        res = measure(net, self.val, s.event_coding, s.device, s.profiles(), s.seed)
        return {
            "val_accuracy": res["accuracy"],
            "energy_nJ": res["energy_nJ_by_model"][s.transfer.energy_model],
            "events_per_sample": res["events_per_sample"],
            "accuracy_retention": (
                res["accuracy"] / self.direct_accuracy if self.direct_accuracy > 0 else 0.0
            ),
        }

    @functools.cached_property
    def prices(self) -> tuple[float, ...] | None:
        """The energy-priced penalty's pJ per spike of each layer, counted once on the E every
        trial starts from, as the final fine-tuning counts them (None: the rate penalty). Every
        fine-tuning of the run, a trial or one taken on from where its trial stopped, uses
        these: counted again on the stopped trial's E they would differ, and the network taken
        on would not be the one a fine-tuning from the start at its lambda ends with."""
        cfg = self.settings.finetune_config(0.0)
        if cfg.price is None:  # nothing to count: no copy of E or of the training samples
            return None
        train = training_samples(self.splits.train, cfg)
        return spike_prices(copy.deepcopy(self.start), train, cfg, self.settings.device)

    def _finetune(
        self, start: SpikingNet, lam: float, callbacks: list[Callback]
    ) -> tuple[SpikingNet, list[dict[str, float]]]:
        """E fine-tuned from ``start`` at ``lam`` as every trial is, with the run's spike
        :attr:`prices`; the epochs' validation is on the whole split unless a
        :class:`MeasureEpochs` among ``callbacks`` measures it."""
        s = self.settings
        val = None if self.whole else self.splits.validation
        logits = self.shared_logits if self.distill else None
        cfg = s.finetune_config(lam).with_changes(prices=self.prices)
        return finetune_event_network(
            start, self.direct, self.splits.train, cfg, s.device, logits, val, callbacks
        )

    def evaluate(
        self, lam: float, on_epoch: Callback | None = None, judge: Judge | None = None
    ) -> dict[str, float]:
        """One trial: the first ``trial_epochs`` of the fine-tuning at ``lam``, its epochs
        logged by ``on_epoch``, checked by ``judge``; its measurement on validation."""
        state, epochs = FitState(), MeasureEpochs(self.measured)
        callbacks: list[Callback] = [Resume(state), StopAfter(self.settings.trial_epochs)]
        if judge is not None:
            callbacks.append(Checks(judge, self.measured))
        if self.whole:
            callbacks.append(epochs)
        callbacks += [on_epoch] if on_epoch is not None else []
        net, history = self._finetune(self.start, lam, callbacks)
        res = epochs.final(net, trained_on=state.mid_epoch)
        scores = (res["val_accuracy"], res["energy_nJ"])
        self.trained[lam] = TrainedTrial(checkpoint(net), history, scores, copy.deepcopy(state))
        keep = non_dominated({k: entry.scores for k, entry in self.trained.items()})
        for dominated in set(self.trained) - keep:  # only a Pareto-optimal trial can be chosen
            del self.trained[dominated]
        logger.info(
            "trial λ = %.4g: val accuracy %.4f, %.0f events/sample",
            lam,
            res["val_accuracy"],
            res["events_per_sample"],
        )
        return res

    def complete(self, lam: float) -> tuple[dict[str, float], tuple[dict[str, Any], list]]:
        """The trial at ``lam`` taken on to the full fine-tuning (from where it stopped when this
        run trained it, else from the start: a trial of another worker), measured as a trial;
        with the network's checkpoint and its whole epoch history."""
        epochs = MeasureEpochs(self.measured)
        callbacks: list[Callback] = [epochs] if self.whole else []
        if lam in self.trained:
            model, before, _, state = self.trained[lam]
            resume = Resume(copy.deepcopy(state))
            net, after = self._finetune(restore(model), lam, [resume, *callbacks])
            history = [*before, *after]
        else:
            net, history = self._finetune(self.start, lam, callbacks)
        return epochs.final(net), (checkpoint(net.cpu()), history)

    def kept(self, lam: float) -> tuple[dict[str, Any], list[dict[str, float]]] | None:
        """This run's own trial at ``lam`` as it ended (its checkpoint and history), if kept."""
        entry = self.trained.get(lam)
        return None if entry is None else (entry.model, entry.history)
