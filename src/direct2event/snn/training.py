"""Surrogate-gradient BPTT training and evaluation loops (pure PyTorch).

One loop (:func:`fit`) serves both direct-coded training of D and event-driven fine-tuning of E:
the encoder and the extra loss term are arguments.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from direct2event.snn.activity import record_activity
from direct2event.snn.encoders import InputCoding, encode
from direct2event.snn.interrupts import safe_point
from direct2event.snn.models import SpikingNet

try:
    from tqdm.auto import tqdm
except ImportError:  # this library must run where only torch and numpy are installed

    class tqdm:  # type: ignore[no-redef]
        """Stand-in without a bar: iterates and ignores the bar's settings."""

        def __init__(self, iterable: list, **_kwargs: object) -> None:
            self.iterable = iterable

        def __iter__(self) -> Iterator:
            return iter(self.iterable)

        def set_postfix(self, **_kwargs: object) -> None:
            """Nothing to show."""


ActivityLoss = Callable[[Tensor, Tensor, list[Tensor], Tensor, Tensor], Tensor]

logger = logging.getLogger(__name__)


def show_bar(progress: bool) -> bool:
    """A live bar only where a person watches a terminal: written to a file or a CI log, a bar
    adds a line per update (most of a run's log), so there the epoch summary line stands alone."""
    return progress and sys.stderr.isatty()


def epoch_line(desc: str, record: dict[str, float], epochs: int) -> str:
    """``<desc> epoch 2/4: train_loss 0.1234, train_accuracy 0.9712, ...`` (one line per epoch)."""
    values = ", ".join(f"{k} {v:.4g}" for k, v in record.items() if k != "epoch")
    return f"{desc} epoch {int(record['epoch'])}/{epochs}: {values}"


@dataclass(frozen=True)
class Split:
    """Inputs and integer labels of one data split (inputs stay on the CPU)."""

    x: Tensor
    y: Tensor

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"Split has {len(self.x)} inputs but {len(self.y)} labels.")

    def __len__(self) -> int:
        return len(self.y)

    def head(self, n: int) -> Split:
        """The first ``n`` samples."""
        return Split(self.x[:n], self.y[:n])


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU; other names are passed to torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device '{name}' was requested but CUDA is not available; use 'auto'.")
    return torch.device(name)


def as_float(x: Tensor) -> Tensor:
    """Stored inputs (uint8 event counts or float images) as float32."""
    return x.float() if x.dtype != torch.float32 else x


def random_shift(x: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Translate each image of ``[B, ..., H, W]`` by up to ``max_shift`` px (zero fill)."""
    if max_shift <= 0:
        return x
    batch = x.shape[0]
    h, w = x.shape[-2:]
    padded = F.pad(x, (max_shift,) * 4)
    dy = torch.randint(0, 2 * max_shift + 1, (batch,), generator=generator)
    dx = torch.randint(0, 2 * max_shift + 1, (batch,), generator=generator)
    rows = (dy.view(-1, 1) + torch.arange(h)).view(batch, *([1] * (x.dim() - 3)), h, 1)
    cols = (dx.view(-1, 1) + torch.arange(w)).view(batch, *([1] * (x.dim() - 3)), 1, w)
    index = torch.arange(batch).view(batch, *([1] * (x.dim() - 1)))
    if x.dim() == 4:
        chan = torch.arange(x.shape[1]).view(1, -1, 1, 1)
        return padded[index, chan, rows, cols]
    time = torch.arange(x.shape[1]).view(1, -1, 1, 1, 1)
    chan = torch.arange(x.shape[2]).view(1, 1, -1, 1, 1)
    return padded[index, time, chan, rows, cols]


def batches(n: int, batch_size: int, generator: torch.Generator | None = None) -> Iterator[Tensor]:
    """Index batches over ``n`` samples, shuffled when a generator is given."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


INFERENCE_FOLDED_BATCH = 256


def encoded_batches(
    data: Split,
    coding: InputCoding,
    device: torch.device,
    batch_size: int | None = None,
    seed: int = 0,
) -> Iterator[tuple[Tensor, Tensor]]:
    """``(indices, encoded inputs [T, B, ...])`` over ``data`` in order, random codes seeded.

    The default batch keeps ``T * B`` near 256 images: with the C kernels, larger folded batches
    overflow the CPU caches and run slower per sample.
    """
    gen = torch.Generator().manual_seed(seed)
    size = batch_size or max(8, INFERENCE_FOLDED_BATCH // coding.timesteps)
    for idx in batches(len(data), size):
        safe_point()
        xb = as_float(data.x[idx]).to(device)
        if coding.adapter is not None:
            xb = coding.adapter(xb)
        yield (
            idx,
            encode(xb, coding.encoding, coding.timesteps, gen if device.type == "cpu" else None),
        )


@dataclass(frozen=True)
class FitConfig:
    """Settings of one BPTT run (validated upstream by the pipeline's parameter models)."""

    epochs: int
    lr: float
    batch_size: int
    coding: InputCoding
    weight_decay: float = 0.0
    optimizer: str = "adam"
    schedule: str = "onecycle"
    shift_augment: int = 0
    seed: int = 0
    bf16: bool = False  # bf16 autocast of the forward pass (for GPUs with bf16 units)
    progress: bool = True  # a bar per epoch, shown only on a terminal
    desc: str = "train"  # what the bar and the epoch lines name


def _optimizer(model: SpikingNet, cfg: FitConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay
        )
    raise ValueError(f"Unknown optimizer '{cfg.optimizer}'; use 'adam' or 'sgd'.")


def _scheduler(
    opt: torch.optim.Optimizer, cfg: FitConfig, steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    if cfg.schedule == "constant":
        return None
    raise ValueError(f"Unknown schedule '{cfg.schedule}'; use onecycle, cosine or constant.")


@dataclass
class FitLoop:
    """Where a :func:`fit` is, as its callbacks see it and may change it: the model, optimizer,
    scheduler and batch-order generator; the optimizer steps done (``step``, counted over all
    ``cfg.epochs``), where this call started (``start``) and where it stops (``end``: a callback
    may set it in ``on_fit_start`` to stop early, inside an epoch too); and an epoch left
    unfinished (its batches, the batches done, its running loss, correct, rate and seen sums),
    which the next call's first epoch goes on with."""

    model: SpikingNet
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    generator: torch.Generator
    per_epoch: int
    total: int
    start: int = 0
    step: int = 0
    end: int = 0
    order: list[Tensor] | None = None
    batch: int = 0
    sums: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)

    @property
    def steps(self) -> int:
        """The optimizer steps this call makes."""
        return self.end - self.start


class Callback:
    """Hooks into :func:`fit`, called in the order given; each may read and change the
    :class:`FitLoop`. An exception a hook raises ends the training."""

    def on_fit_start(self, loop: FitLoop) -> None:
        """Before the first step (a resumed fit loads its state, a short one sets ``end``)."""

    def on_step_end(self, loop: FitLoop) -> None:
        """After each optimizer step (the model may be measured: it is put back to training)."""

    def on_epoch_end(self, loop: FitLoop, record: dict[str, float]) -> None:
        """As an epoch ends, with its record (a callback may add to it, or log it)."""

    def on_fit_end(self, loop: FitLoop) -> None:
        """After the last step of this call, also one that stopped inside an epoch."""


class TrainingDiverged(FloatingPointError):
    """The training loss became NaN or infinite (a learning rate far too high): raised at the
    first such batch, with the epoch and the learning rate."""

    def __init__(self, message: str, epoch: int, lr: float) -> None:
        super().__init__(message)
        self.epoch, self.lr = epoch, lr


def fit(
    model: SpikingNet,
    train: Split,
    cfg: FitConfig,
    device: torch.device,
    val: Split | None = None,
    extra_loss: ActivityLoss | None = None,
    callbacks: Sequence[Callback] = (),
) -> list[dict[str, float]]:
    """Train ``model`` with BPTT; returns one record per epoch and logs each as one line.

    The loss is cross-entropy on the time-averaged logits plus
    ``extra_loss(logits, y, activity, x, idx)`` when given (``activity`` is every LIF layer's
    output, recorded with its graph; ``x`` the batch before encoding; ``idx`` its sample indices
    in ``train``). Each record holds ``train_loss``, ``train_accuracy``, ``mean_rate`` (mean LIF
    output per neuron and step), ``lr`` and, with ``val``, ``val_accuracy``; ``callbacks`` see
    the loop at its start, after each step, at each epoch's end (live logging, another
    validation) and at its end (see :class:`Callback`). Every step is a safe point
    (:mod:`direct2event.snn.interrupts`).
    """
    if len(train) == 0:
        raise ValueError("The training split is empty.")
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.to(device)
    opt = _optimizer(model, cfg)
    per_epoch = math.ceil(len(train) / cfg.batch_size)
    sched = _scheduler(opt, cfg, max(cfg.epochs * per_epoch, 1))
    total = cfg.epochs * per_epoch
    loop = FitLoop(model, opt, sched, gen, per_epoch, total, end=total)
    for callback in callbacks:
        callback.on_fit_start(loop)
    loop.start = loop.step
    history: list[dict[str, float]] = []
    while loop.step < loop.end:
        record = _epoch(loop, train, cfg, device, extra_loss, callbacks)
        if record is None:  # stopped inside the epoch: its record waits for its end
            break
        if val is not None and len(val):
            record["val_accuracy"] = evaluate(model, val, cfg.coding, device, seed=cfg.seed)
        for callback in callbacks:
            callback.on_epoch_end(loop, record)
        history.append(record)
        logger.info(epoch_line(cfg.desc, record, cfg.epochs))
    for callback in callbacks:
        callback.on_fit_end(loop)
    return history


def _epoch(
    loop: FitLoop,
    train: Split,
    cfg: FitConfig,
    device: torch.device,
    extra_loss: ActivityLoss | None,
    callbacks: Sequence[Callback],
) -> dict[str, float] | None:
    """One epoch of :func:`fit` from where ``loop`` is, up to ``loop.end``: its record, or
    None when it stopped inside (the epoch's batches and sums are kept in ``loop``)."""
    epoch = loop.step // loop.per_epoch
    loop.model.train()
    if loop.order is not None:  # the epoch a stopped fit left inside: its batches and sums
        order, done, sums = loop.order, loop.batch, list(loop.sums)
    else:
        order, done, sums = list(batches(len(train), cfg.batch_size, loop.generator)), 0, [0.0] * 4
    loop.order, loop.batch = None, 0
    bar = tqdm(
        order[done : done + loop.end - loop.step],
        desc=f"{cfg.desc} epoch {epoch + 1}/{cfg.epochs}",
        disable=not show_bar(cfg.progress),
        leave=False,
    )
    for idx in bar:
        safe_point()
        value, logits, acts, yb = _step(loop, train, idx, cfg, device, extra_loss, epoch, done)
        loop.step += 1
        done += 1
        for callback in callbacks:
            callback.on_step_end(loop)
        if not loop.model.training:  # a callback measured it in eval mode
            loop.model.train()
        n = len(yb)
        sums[0] += value * n
        sums[1] += (logits.argmax(1) == yb).sum().item()
        sums[2] += mean_rate(acts).item() * n
        sums[3] += n
        bar.set_postfix(loss=f"{sums[0] / sums[3]:.4f}", acc=f"{sums[1] / sums[3]:.4f}")
    if done < len(order):
        loop.order, loop.batch, loop.sums = order, done, tuple(sums)
        return None
    loss_sum, correct, rate_sum, seen = sums
    return {
        "epoch": float(epoch + 1),
        "train_loss": loss_sum / seen,
        "train_accuracy": correct / seen,
        "mean_rate": rate_sum / seen,
        "lr": loop.optimizer.param_groups[0]["lr"],
    }


def _step(
    loop: FitLoop,
    train: Split,
    idx: Tensor,
    cfg: FitConfig,
    device: torch.device,
    extra_loss: ActivityLoss | None,
    epoch: int,
    batch: int,
) -> tuple[float, Tensor, list[Tensor], Tensor]:
    """One optimizer step on the samples ``idx``: the loss, the logits, the LIF activity and
    the labels (raises :class:`TrainingDiverged` at a non-finite loss)."""
    model, opt, gen = loop.model, loop.optimizer, loop.generator
    xb = random_shift(as_float(train.x[idx]), cfg.shift_augment, gen).to(device)
    yb = train.y[idx].to(device)
    inputs = encode(
        xb, cfg.coding.encoding, cfg.coding.timesteps, gen if device.type == "cpu" else None
    )
    with (
        torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16),
        record_activity(model) as acts,
    ):
        logits = model(inputs).float()  # the loss in fp32 also under bf16 autocast
        loss = F.cross_entropy(logits, yb)
        if extra_loss is not None:
            loss = loss + extra_loss(logits, yb, acts, xb, idx)
    value = loss.item()
    if not math.isfinite(value):  # stop at once: NaN weights would only spread
        raise TrainingDiverged(
            f"{cfg.desc or 'training'}: the loss is {value} in epoch {epoch + 1} of "
            f"{cfg.epochs} (batch {batch + 1}) at learning rate "
            f"{opt.param_groups[0]['lr']:.3g} (configured {cfg.lr:g}). Lower the learning rate.",
            epoch=epoch + 1,
            lr=cfg.lr,
        )
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if loop.scheduler is not None:
        loop.scheduler.step()
    return value, logits, acts, yb


def mean_rate(activity: list[Tensor], costs: Sequence[float] | None = None) -> Tensor:
    """Mean output per neuron per step over all recorded LIF layers (all neurons weigh the same);
    with ``costs`` (one per layer), each layer's spikes priced by its cost and normalised by
    the cost of every neuron firing once, so that equal costs give the mean rate back and lambda
    keeps its scale: the energy-priced penalty."""
    if not activity:
        return torch.zeros(())
    if costs is None:
        return sum(a.sum() for a in activity) / sum(a.numel() for a in activity)
    total = sum(c * a.sum() for c, a in zip(costs, activity, strict=True))
    return total / sum(c * a.numel() for c, a in zip(costs, activity, strict=True))


@torch.no_grad()
def evaluate(
    model: SpikingNet,
    data: Split,
    coding: InputCoding,
    device: torch.device,
    batch_size: int | None = None,
    seed: int = 0,
) -> float:
    """Accuracy (0-1) of ``model`` on ``data`` (the model is put in eval mode)."""
    if not len(data):
        return float("nan")
    predicted = predict_logits(model, data, coding, device, batch_size, seed)
    return int((predicted.argmax(1) == data.y).sum()) / len(data)


@torch.no_grad()
def predict_logits(
    model: SpikingNet,
    data: Split,
    coding: InputCoding,
    device: torch.device,
    batch_size: int | None = None,
    seed: int = 0,
) -> Tensor:
    """Time-averaged logits ``[N, classes]`` of ``model`` for every sample of ``data``, in order
    (on the CPU; the model is put in eval mode)."""
    model.to(device).eval()
    return torch.cat(
        [
            model(inputs).float().cpu()
            for _, inputs in encoded_batches(data, coding, device, batch_size, seed)
        ]
    )
