"""The sweep's hooks into the library's training loop (:class:`direct2event.snn.training.
Callback`): a trial runs the first part of the fine-tuning (:class:`StopAfter`), is checked at
fractions of its steps (:class:`Checks`), is measured with its events at each epoch's end
(:class:`MeasureEpochs`), and keeps where it stopped so that a chosen trial goes on from there
exactly as an uninterrupted fine-tuning would (:class:`Resume`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from direct2event.glue.sweep.early_stop import Judge
from direct2event.snn.models import SpikingNet
from direct2event.snn.training import Callback, FitLoop

Measure = Callable[[SpikingNet], dict[str, float]]  # val_accuracy, energy_nJ, events_per_sample


@dataclass
class FitState:
    """Where a fit stopped, to go on exactly as an uninterrupted one would: the optimizer's
    and scheduler's states, the batch order's and torch's random states, the epochs and steps
    done, and, when it stopped inside an epoch, that epoch's batches, the batches done and its
    running sums (so the epoch's record comes out as an uninterrupted epoch's)."""

    epoch: int = 0
    step: int = 0
    optimizer: dict | None = None
    scheduler: dict | None = None
    generator: Tensor | None = None
    rng: Tensor | None = None
    order: list[Tensor] | None = None  # the unfinished epoch's batches
    batch: int = 0  # batches of it done
    sums: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # loss, correct, rate, seen

    @property
    def started(self) -> bool:
        """Whether a fit has run into this state (else a fit starts from scratch)."""
        return self.optimizer is not None

    @property
    def mid_epoch(self) -> bool:
        """Whether the fit stopped inside an epoch (no epoch-end validation saw its weights)."""
        return self.batch > 0


class Resume(Callback):
    """Start from ``state`` when it holds a stopped fit (same model, data and settings), and
    write where this fit stopped back into it. Put it before :class:`StopAfter`."""

    def __init__(self, state: FitState) -> None:
        self.state = state

    def on_fit_start(self, loop: FitLoop) -> None:
        st = self.state
        if not st.started:
            return
        loop.optimizer.load_state_dict(st.optimizer)
        if loop.scheduler is not None and st.scheduler is not None:
            loop.scheduler.load_state_dict(st.scheduler)
        loop.generator.set_state(st.generator)
        torch.set_rng_state(st.rng)
        loop.step = st.step
        if st.mid_epoch:
            loop.order, loop.batch, loop.sums = st.order, st.batch, st.sums

    def on_fit_end(self, loop: FitLoop) -> None:
        st = self.state
        st.epoch, st.step = loop.step // loop.per_epoch, loop.step
        st.optimizer = loop.optimizer.state_dict()
        st.scheduler = loop.scheduler.state_dict() if loop.scheduler is not None else None
        st.generator, st.rng = loop.generator.get_state(), torch.get_rng_state()
        st.order, st.batch, st.sums = loop.order, loop.batch, loop.sums


class StopAfter(Callback):
    """Stop after ``passes`` of the fit's epochs from where it starts, a fraction allowed
    (0.25: the first quarter of an epoch's batches; the learning-rate schedule still spans
    every epoch)."""

    def __init__(self, passes: float) -> None:
        self.passes = passes

    def on_fit_start(self, loop: FitLoop) -> None:
        loop.end = min(loop.total, loop.step + max(round(self.passes * loop.per_epoch), 0))


class Checks(Callback):
    """The early-stop checks of one trial: after the judge's fractions of this fit's steps, the
    model is measured and judged (the judge raises to stop the trial)."""

    def __init__(self, judge: Judge, measure: Measure) -> None:
        self.judge, self.measure = judge, measure
        self.at: dict[int, float] = {}

    def on_step_end(self, loop: FitLoop) -> None:
        done = loop.step - loop.start
        if done == 1:
            self.at = self.judge.steps(loop.steps)
        if done in self.at:
            self.judge(self.at[done], done, self.measure(loop.model))


class MeasureEpochs(Callback):
    """A trial's validation at each epoch's end that counts events too, so that the trial's
    measurement is its last epoch's: one pass over the validation samples instead of two."""

    def __init__(self, measure: Measure) -> None:
        self.measure = measure
        self.last: dict[str, float] | None = None

    def on_epoch_end(self, loop: FitLoop, record: dict[str, float]) -> None:
        self.last = self.measure(loop.model)
        record["val_accuracy"] = self.last["val_accuracy"]

    def final(self, net: SpikingNet, trained_on: bool = False) -> dict[str, float]:
        """The measurement of ``net`` as its fine-tuning ended; ``trained_on``: it trained on
        after its last epoch's end (a trial stopped inside an epoch), so it is measured now."""
        if self.last is None or trained_on:
            return self.measure(net)
        return self.last
