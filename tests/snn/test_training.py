from __future__ import annotations

import math

import torch

from direct2event.snn.encoders import InputCoding
from direct2event.snn.finetuning import FinetuneConfig, finetune_event_network
from direct2event.snn.models import build_model, checkpoint, restore, to_event_network
from direct2event.snn.training import Callback, FitConfig, FitLoop, evaluate, fit


def test_bf16_autocast_training_learns(digits_splits) -> None:
    torch.manual_seed(0)
    net = build_model("convnet", digits_splits.input_shape, 10, channels=(8, 16))
    cfg = FitConfig(
        epochs=3, lr=1e-2, batch_size=64, coding=InputCoding("analog", 4), seed=0, bf16=True,
        progress=False,
    )  # fmt: skip
    history = fit(net, digits_splits.train, cfg, torch.device("cpu"))
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
    fit_cfg = FitConfig(
        epochs=1, lr=2e-3, batch_size=64, coding=InputCoding("rate", 4), seed=3, progress=False
    )
    cfg = FinetuneConfig(fit_cfg, rate_lambda=5.0)
    event = to_event_network(digits_direct_model)
    nets = [
        finetune_event_network(
            event,
            digits_direct_model,
            digits_splits.train,
            cfg,
            torch.device("cpu"),
        )[0]
        for _ in range(2)
    ]
    for (key, a), b in zip(
        nets[0].state_dict().items(), nets[1].state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), key


def test_callbacks_see_the_loop_stop_it_and_add_to_the_records(digits_splits) -> None:
    """A callback may set where the fit stops (inside an epoch too: the loop keeps the epoch's
    batches and sums), sees every step, and adds to each epoch's record before it is kept."""
    cfg = FitConfig(
        epochs=2, lr=1e-2, batch_size=64, coding=InputCoding("rate", 4), seed=0, progress=False
    )
    per_epoch = math.ceil(len(digits_splits.train) / 64)

    class Probe(Callback):
        def __init__(self) -> None:
            self.steps: list[int] = []
            self.loop: FitLoop | None = None

        def on_fit_start(self, loop: FitLoop) -> None:
            assert (loop.step, loop.end, loop.total) == (0, 2 * per_epoch, 2 * per_epoch)
            loop.end = per_epoch + 3  # the whole first epoch, 3 steps of the second

        def on_step_end(self, loop: FitLoop) -> None:
            self.steps.append(loop.step)

        def on_epoch_end(self, loop: FitLoop, record: dict[str, float]) -> None:
            record["seen_step"] = float(loop.step)

        def on_fit_end(self, loop: FitLoop) -> None:
            self.loop = loop

    torch.manual_seed(0)
    net = build_model("convnet", digits_splits.input_shape, 10, channels=(8, 16))
    probe = Probe()
    history = fit(net, digits_splits.train, cfg, torch.device("cpu"), callbacks=[probe])
    assert probe.steps == list(range(1, per_epoch + 4))
    assert [h["seen_step"] for h in history] == [float(per_epoch)]  # one epoch ended
    assert probe.loop.order is not None and probe.loop.batch == 3  # the second kept its place
    assert probe.loop.sums[3] == 3 * 64  # samples seen in it so far
