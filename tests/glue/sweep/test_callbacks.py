"""The sweep's training callbacks, exactly: a trial that stops after its first epochs (or inside
an epoch) and is taken on from where it stopped ends bit for bit as the uninterrupted
fine-tuning; the early-stop checks see the trial's own steps; a trial is measured with its
events at each epoch's end, or where it stopped."""

from __future__ import annotations

import math

import torch

from direct2event.glue.sweep.callbacks import FitState, MeasureEpochs, Resume, StopAfter
from direct2event.snn.encoders import InputCoding
from direct2event.snn.finetuning import FinetuneConfig, finetune_event_network
from direct2event.snn.models import build_model, checkpoint, restore, to_event_network
from direct2event.snn.training import Callback, FitConfig, FitLoop, evaluate, fit


class Steps(Callback):
    """Records (steps done in this call, steps this call makes) after each step."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int]] = []

    def on_step_end(self, loop: FitLoop) -> None:
        self.seen.append((loop.step - loop.start, loop.steps))


def fine_tuning(seed: int) -> FinetuneConfig:
    fit_cfg = FitConfig(
        epochs=3, lr=2e-3, batch_size=64, coding=InputCoding("rate", 4), seed=seed,
        schedule="cosine", progress=False,
    )  # fmt: skip
    return FinetuneConfig(fit_cfg, rate_lambda=3.0, train_thresholds=True)


def finetune(start, cfg, direct, splits, callbacks=()):
    """E fine-tuned from ``start`` on the digits splits, validated each epoch."""
    return finetune_event_network(
        start, direct, splits.train, cfg, torch.device("cpu"), val=splits.validation,
        callbacks=callbacks,
    )  # fmt: skip


def test_a_trial_taken_on_from_where_it_stopped_equals_the_whole_fine_tuning(
    digits_splits, digits_direct_model
) -> None:
    """A trial runs the first epoch of three and the chosen one goes on from its state: weights,
    thresholds and the epoch history equal an uninterrupted fine-tuning, with the learning-rate
    schedule spanning all three epochs in both."""
    cfg = fine_tuning(3)
    event = to_event_network(digits_direct_model)

    def run(start, callbacks=()):
        return finetune(start, cfg, digits_direct_model, digits_splits, callbacks)

    whole, whole_history = run(event)
    state, steps = FitState(), Steps()
    trial, before = run(event, [Resume(state), StopAfter(1), steps])
    per_epoch = math.ceil(len(digits_splits.train) / 64)
    assert (state.epoch, state.step) == (1, per_epoch)
    assert steps.seen[-1] == (per_epoch, per_epoch)  # checks see the trial's own steps
    assert len(before) == 1 and before[0]["lr"] > 0.5 * 2e-3  # the schedule spans 3 epochs
    taken_on, after = run(restore(checkpoint(trial)), [Resume(state)])
    assert state.epoch == 3 and [h["epoch"] for h in after] == [2.0, 3.0]
    assert [*before, *after] == whole_history
    for (key, a), b in zip(whole.state_dict().items(), taken_on.state_dict().values(), strict=True):
        assert torch.equal(a, b), key
    # a trial that stops after as many epochs as there are is the whole fine-tuning
    again, _ = run(event, [Resume(FitState()), StopAfter(5)])
    assert all(torch.equal(a, b) for a, b in zip(whole.parameters(), again.parameters()))


def test_a_trial_stopped_inside_an_epoch_goes_on_as_the_whole_fine_tuning(
    digits_splits, digits_direct_model
) -> None:
    """Fractional trials (0.4 of a pass, for datasets whose pass is long): stopped inside the
    first epoch, taken on past an epoch's end and stopped inside the second, then to the end,
    E's weights and the epoch records equal an uninterrupted fine-tuning's (the epochs cut in
    two get their records, with the whole epoch's sums, when they end)."""
    cfg = fine_tuning(5)
    event = to_event_network(digits_direct_model)

    def run(start, callbacks=()):
        return finetune(start, cfg, digits_direct_model, digits_splits, callbacks)

    whole, whole_history = run(event)
    per_epoch = math.ceil(len(digits_splits.train) / 64)
    state, steps = FitState(), Steps()
    trial, first = run(event, [Resume(state), StopAfter(0.4), steps])
    part = round(0.4 * per_epoch)
    assert first == [] and state.mid_epoch and (state.epoch, state.step) == (0, part)
    assert steps.seen[-1] == (part, part)  # the early-stop checks see the trial's own steps
    net, second = run(restore(checkpoint(trial)), [Resume(state), StopAfter(1.1)])
    assert [h["epoch"] for h in second] == [1.0] and state.mid_epoch
    assert state.step == part + round(1.1 * per_epoch)
    net, rest = run(restore(checkpoint(net)), [Resume(state)])
    assert not state.mid_epoch and state.step == 3 * per_epoch
    assert [*first, *second, *rest] == whole_history
    for (key, a), b in zip(whole.state_dict().items(), net.state_dict().values(), strict=True):
        assert torch.equal(a, b), key


def test_a_trial_is_measured_at_its_epochs_end_or_where_it_stopped(digits_splits) -> None:
    """Each epoch's val_accuracy comes from the trial's own measurement (events counted in the
    same pass), which, measuring what the plain validation does, changes nothing; a trial that
    trained on past its last epoch's end (1.5 epochs) is measured as it stopped."""
    coding, cpu = InputCoding("rate", 4), torch.device("cpu")
    val = digits_splits.validation
    cfg = FitConfig(epochs=2, lr=1e-2, batch_size=64, coding=coding, seed=0, progress=False)
    calls: list[float] = []

    def measured(net) -> dict[str, float]:
        calls.append(evaluate(net, val, coding, cpu))
        return {"val_accuracy": calls[-1]}

    def net():
        torch.manual_seed(0)
        return build_model("convnet", digits_splits.input_shape, 10, channels=(8, 16))

    plain = fit(net(), digits_splits.train, cfg, cpu, val)
    measuring = fit(net(), digits_splits.train, cfg, cpu, callbacks=[MeasureEpochs(measured)])
    assert measuring == plain and [h["val_accuracy"] for h in measuring] == calls
    calls.clear()
    model, state, epochs = net(), FitState(), MeasureEpochs(measured)
    history = fit(
        model, digits_splits.train, cfg, cpu, callbacks=[Resume(state), StopAfter(1.5), epochs]
    )
    assert len(history) == 1 and state.mid_epoch and len(calls) == 1
    assert epochs.final(model)["val_accuracy"] == history[0]["val_accuracy"] and len(calls) == 1
    now = epochs.final(model, trained_on=True)
    assert len(calls) == 2 and now["val_accuracy"] == evaluate(model, val, coding, cpu)
