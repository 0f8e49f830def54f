from __future__ import annotations

import copy

import pytest
import torch

from direct2event.snn.encoders import InputCoding
from direct2event.snn.evaluation import evaluate_with_counts
from direct2event.snn.finetuning import FinetuneConfig, finetune_event_network
from direct2event.snn.losses import TransferLoss
from direct2event.snn.models import to_event_network
from direct2event.snn.training import FitConfig, predict_logits

CPU = torch.device("cpu")


def test_rate_penalty_gives_fewer_spikes_than_no_penalty(
    digits_splits, digits_direct_model
) -> None:
    event = to_event_network(digits_direct_model)
    cfg = FitConfig(
        epochs=2, lr=2e-3, batch_size=64, coding=InputCoding("rate", 4), seed=3, progress=False
    )
    events = {}
    for lam in (0.0, 10.0):
        ft = FinetuneConfig(cfg, rate_lambda=lam)
        tuned, _ = finetune_event_network(event, digits_direct_model, digits_splits.train, ft, CPU)
        _, counts = evaluate_with_counts(tuned, digits_splits.test, InputCoding("rate", 4), CPU)
        events[lam] = counts.per_sample(sum(counts.neuron_events.values()))
    assert events[10.0] < 0.8 * events[0.0]


def test_distillation_loss_runs_and_teacher_is_frozen(digits_splits, digits_direct_model) -> None:
    teacher = copy.deepcopy(digits_direct_model)
    loss = TransferLoss(
        rate_lambda=1.0, teacher=teacher, teacher_coding=InputCoding("analog", 4), alpha=0.4
    )
    assert not any(p.requires_grad for p in teacher.parameters())
    event = to_event_network(digits_direct_model).train()
    x = digits_splits.train.x[:16]
    logits = event(torch.bernoulli(x.unsqueeze(0).expand(4, *x.shape)))
    value = loss(logits, digits_splits.train.y[:16], [torch.ones(3)], x)
    assert torch.isfinite(value)
    assert value.requires_grad
    # a student equal to its teacher has KL = 0: the loss is then rate - (1 - alpha) * CE
    # (fit() adds the full CE once more, giving alpha * CE + rate in total)
    mirror = TransferLoss(rate_lambda=1.0, teacher=copy.deepcopy(digits_direct_model), alpha=0.4)
    d_logits = digits_direct_model(x.unsqueeze(0).expand(4, *x.shape))
    y = digits_splits.train.y[:16]
    expected = 1.0 - 0.6 * torch.nn.functional.cross_entropy(d_logits, y)
    assert mirror(d_logits, y, [torch.ones(3)], x).item() == pytest.approx(
        expected.item(), abs=1e-5
    )


def test_precomputed_teacher_logits_give_the_loss_of_the_running_teacher(
    digits_splits, digits_direct_model
) -> None:
    train = digits_splits.train
    table = predict_logits(digits_direct_model, train, InputCoding("analog", 4), CPU)
    assert table.shape == (len(train), 10)
    idx = torch.tensor([5, 0, 17, 3, 40])
    x, y = train.x[idx], train.y[idx]
    student = to_event_network(digits_direct_model).eval()
    logits = student(torch.bernoulli(x.unsqueeze(0).expand(4, *x.shape)))
    acts = [torch.full((3,), 0.25)]
    running = TransferLoss(rate_lambda=0.5, teacher=copy.deepcopy(digits_direct_model))
    looked_up = TransferLoss(rate_lambda=0.5, teacher_logits=table)
    expected = running(logits, y, acts, x, idx).item()
    assert looked_up(logits, y, acts, x, idx).item() == pytest.approx(expected, abs=1e-5)
    # the KL term is really there: a wrong table row changes the loss
    assert looked_up(logits, y, acts, x, idx.flip(0)).item() != pytest.approx(expected, abs=1e-3)
    with pytest.raises(ValueError, match="indices"):
        looked_up(logits, y, acts, x)


def test_shared_teacher_logits_give_the_same_fine_tuning(
    digits_splits, digits_direct_model
) -> None:
    event = to_event_network(digits_direct_model)
    cfg = FitConfig(
        epochs=1, lr=2e-3, batch_size=64, coding=InputCoding("regular", 4), seed=1, progress=False
    )
    train = digits_splits.train
    ft = FinetuneConfig(cfg, rate_lambda=1.0, distill=True)
    args = (event, digits_direct_model, train, ft, CPU)
    own, _ = finetune_event_network(*args)
    table = predict_logits(digits_direct_model, train, InputCoding("analog", 4), CPU)
    shared, _ = finetune_event_network(*args, logits=table)
    for name, value in own.state_dict().items():
        assert torch.equal(value, shared.state_dict()[name]), name
    # the penalty and the teacher did act: the weights moved away from E's start
    moved = own.state_dict()["layers.0.weight"] - event.state_dict()["layers.0.weight"]
    assert moved.abs().max() > 0
    with pytest.raises(ValueError, match="rows"):
        finetune_event_network(*args, logits=table[:-1])


def test_negative_lambda_and_bad_alpha_are_refused() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        TransferLoss(rate_lambda=-0.1)
    with pytest.raises(ValueError, match="alpha"):
        TransferLoss(alpha=1.5)
