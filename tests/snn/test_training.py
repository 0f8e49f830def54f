from __future__ import annotations

import math

import torch

from direct2event.snn.encoders import InputCoding
from direct2event.snn.finetuning import FinetuneConfig, finetune_event_network
from direct2event.snn.models import build_model, checkpoint, restore, to_event_network
from direct2event.snn.training import FitConfig, FitState, evaluate, fit


def test_bf16_autocast_training_learns(digits_splits) -> None:
    torch.manual_seed(0)
    net = build_model("convnet", digits_splits.input_shape, 10, channels=(8, 16))
    cfg = FitConfig(
        epochs=3, lr=1e-2, batch_size=64, coding=InputCoding("analog", 4), seed=0, bf16=True
    )
    history = fit(net, digits_splits.train, None, cfg, torch.device("cpu"), progress=False)
    assert all(math.isfinite(h["train_loss"]) for h in history)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert next(net.parameters()).dtype == torch.float32  # autocast leaves the weights in fp32
    accuracy = evaluate(net, digits_splits.test, InputCoding("analog", 4), torch.device("cpu"))
    assert accuracy > 0.8


def test_checkpoint_restore_round_trip(digits_direct_model) -> None:
    for net in (digits_direct_model, to_event_network(digits_direct_model)):
        again = restore(checkpoint(net))
        assert again.mode == net.mode
        x = torch.rand(4, 5, 1, 8, 8)
        assert torch.equal(again(x), net(x))


def test_finetuning_is_deterministic_so_a_sweep_trial_can_stand_in(
    digits_splits, digits_direct_model
) -> None:
    fit_cfg = FitConfig(epochs=1, lr=2e-3, batch_size=64, coding=InputCoding("rate", 4), seed=3)
    cfg = FinetuneConfig(fit_cfg, rate_lambda=5.0, progress=False)
    event = to_event_network(digits_direct_model)
    nets = [
        finetune_event_network(
            event,
            digits_direct_model,
            digits_splits.train,
            None,
            cfg,
            torch.device("cpu"),
        )[0]
        for _ in range(2)
    ]
    for (key, a), b in zip(
        nets[0].state_dict().items(), nets[1].state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), key


def test_a_trial_taken_on_from_where_it_stopped_equals_the_whole_fine_tuning(
    digits_splits, digits_direct_model
) -> None:
    """A sweep trial runs the first epoch of three (stop_after) and the chosen one goes on from
    its FitState: weights, thresholds and the epoch history equal an uninterrupted fine-tuning,
    with the learning-rate schedule spanning all three epochs in both."""
    fit_cfg = FitConfig(
        epochs=3,
        lr=2e-3,
        batch_size=64,
        coding=InputCoding("rate", 4),
        seed=3,
        schedule="cosine",
    )
    cfg = FinetuneConfig(fit_cfg, rate_lambda=3.0, train_thresholds=True, progress=False)
    event, cpu = to_event_network(digits_direct_model), torch.device("cpu")
    args = (digits_direct_model, digits_splits.train, digits_splits.validation, cfg, cpu)
    whole, whole_history = finetune_event_network(event, *args)

    state = FitState()
    steps_seen: list[tuple[int, int]] = []
    trial, before = finetune_event_network(
        event,
        *args,
        stop_after=1,
        state=state,
        on_step=lambda _net, step, total: steps_seen.append((step, total)),
    )
    per_epoch = math.ceil(len(digits_splits.train) / 64)
    assert (state.epoch, state.step) == (1, per_epoch)
    assert steps_seen[-1] == (per_epoch, per_epoch)  # checks see the trial's own steps
    assert len(before) == 1 and before[0]["lr"] > 0.5 * 2e-3  # the schedule spans 3 epochs
    taken_on, after = finetune_event_network(restore(checkpoint(trial)), *args, state=state)
    assert state.epoch == 3 and [h["epoch"] for h in after] == [2.0, 3.0]
    assert [*before, *after] == whole_history
    for (key, a), b in zip(whole.state_dict().items(), taken_on.state_dict().values(), strict=True):
        assert torch.equal(a, b), key
    # a trial that stops after as many epochs as there are is the whole fine-tuning
    again, _ = finetune_event_network(event, *args, stop_after=5, state=FitState())
    assert all(torch.equal(a, b) for a, b in zip(whole.parameters(), again.parameters()))


def test_a_trial_stopped_inside_an_epoch_goes_on_as_the_whole_fine_tuning(
    digits_splits, digits_direct_model
) -> None:
    """Fractional trials (``stop_after`` = 0.4 of a pass, for datasets whose pass is long):
    stopped inside the first epoch, taken on past an epoch's end and stopped inside the second,
    then to the end, E's weights and the epoch records equal an uninterrupted fine-tuning's
    (the epochs cut in two get their records, with the whole epoch's sums, when they end)."""
    fit_cfg = FitConfig(
        epochs=3, lr=2e-3, batch_size=64, coding=InputCoding("rate", 4), seed=5, schedule="cosine"
    )
    cfg = FinetuneConfig(fit_cfg, rate_lambda=3.0, train_thresholds=True, progress=False)
    event, cpu = to_event_network(digits_direct_model), torch.device("cpu")
    args = (digits_direct_model, digits_splits.train, digits_splits.validation, cfg, cpu)
    whole, whole_history = finetune_event_network(event, *args)

    per_epoch = math.ceil(len(digits_splits.train) / 64)
    state, totals = FitState(), []
    trial, first = finetune_event_network(
        event,
        *args,
        stop_after=0.4,
        state=state,
        on_step=lambda _net, step, total: totals.append((step, total)),
    )
    part = round(0.4 * per_epoch)
    assert first == [] and state.mid_epoch and (state.epoch, state.step) == (0, part)
    assert totals[-1] == (part, part)  # the early-stop checks see the trial's own steps
    net, second = finetune_event_network(
        restore(checkpoint(trial)), *args, stop_after=1.1, state=state
    )
    assert [h["epoch"] for h in second] == [1.0] and state.mid_epoch
    assert state.step == part + round(1.1 * per_epoch)
    net, rest = finetune_event_network(restore(checkpoint(net)), *args, state=state)
    assert not state.mid_epoch and state.step == 3 * per_epoch
    assert [*first, *second, *rest] == whole_history
    for (key, a), b in zip(whole.state_dict().items(), net.state_dict().values(), strict=True):
        assert torch.equal(a, b), key


def test_a_caller_measures_the_epochs_validation_in_place_of_the_accuracy_pass(
    digits_splits,
) -> None:
    """``validate`` gives each epoch's val_accuracy (a sweep trial counts events in the same
    pass); it sees the model as the epoch ended and, measuring the same, changes nothing."""
    cfg = FitConfig(epochs=2, lr=1e-2, batch_size=64, coding=InputCoding("rate", 4), seed=0)
    seen: list[float] = []

    def validate(model) -> float:
        seen.append(evaluate(model, digits_splits.validation, cfg.coding, torch.device("cpu")))
        return seen[-1]

    runs = []
    for hook in (None, validate):
        torch.manual_seed(0)
        net = build_model("convnet", digits_splits.input_shape, 10, channels=(8, 16))
        data = (digits_splits.train, digits_splits.validation)
        runs.append(fit(net, *data, cfg, torch.device("cpu"), progress=False, validate=hook))
    assert [h["val_accuracy"] for h in runs[1]] == seen and len(seen) == 2
    assert runs[0] == runs[1]
