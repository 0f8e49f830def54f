"""Surrogate-gradient BPTT training and evaluation loops (pure PyTorch).

One loop (:func:`fit`) serves both direct-coded training of D and event-driven fine-tuning of E:
the encoder and the extra loss term are arguments.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable, Iterator
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
EpochCallback = Callable[[dict[str, float]], None]
# after each optimizer step: (model, steps done, steps in all); it may measure the model (it is
# put back in training mode after) and raise to stop the training (an early-stopped trial)
StepCallback = Callable[[SpikingNet, int, int], None]
# the validation accuracy of the model at the end of an epoch, measured by the caller
Validate = Callable[[SpikingNet], float]

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
    overflow the CPU caches and run slower per sample (MNIST net, 2 cores: network E at T = 3
    0.30 ms per sample at 256, 0.45 at 512, 0.55 at 1024; network D at T = 4 0.41 at 256 and
    0.43 at 1024).
    """
    gen = torch.Generator().manual_seed(seed)
    size = batch_size or max(8, INFERENCE_FOLDED_BATCH // coding.timesteps)
    for idx in batches(len(data), size):
        safe_point()
        xb = as_float(data.x[idx]).to(device)
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
class FitState:
    """Where a :func:`fit` stopped (``stop_after``), to go on exactly as an uninterrupted run
    would: the optimizer's and scheduler's states, the batch order's and torch's random states,
    the epochs and optimizer steps done, and, when it stopped inside an epoch, that epoch's
    batch order, the batches done and its running sums (so the epoch's record comes out as an
    uninterrupted epoch's). A sweep trial is the first epochs (or the first part of an epoch)
    of the final fine-tuning; the chosen trial continues from here instead of being trained
    again."""

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


class TrainingDiverged(FloatingPointError):
    """The training loss became NaN or infinite (a learning rate far too high): raised at the
    first such batch, with the epoch and the learning rate."""

    def __init__(self, message: str, epoch: int, lr: float) -> None:
        super().__init__(message)
        self.epoch, self.lr = epoch, lr


def fit(
    model: SpikingNet,
    train: Split,
    val: Split | None,
    cfg: FitConfig,
    device: torch.device,
    extra_loss: ActivityLoss | None = None,
    progress: bool = True,
    desc: str = "train",
    on_epoch: EpochCallback | None = None,
    on_step: StepCallback | None = None,
    stop_after: float | None = None,
    state: FitState | None = None,
    validate: Validate | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` with BPTT; returns one record per epoch, logs it as one line and hands
    it to ``on_epoch`` as each epoch ends (live tracking). ``progress``: a bar per epoch, shown
    only on a terminal. ``on_step(model, step, steps)`` runs after every optimizer step (the
    sweep's early-stop checks; ``steps``: the steps this call will make); an exception it raises
    ends the training.

    ``stop_after``: stop after that many of the ``cfg.epochs`` epochs, a fraction allowed (0.25:
    the first quarter of an epoch's batches; the learning-rate schedule still spans all epochs).
    ``state``: filled with where the training stopped; when it already holds a stopped fit's
    state, this call continues that fit (same ``model``, data and ``cfg``) and returns the
    records of the epochs it ends (an epoch stopped inside gets its record when it ends).
    ``validate(model)``: the epoch's ``val_accuracy`` in place of the accuracy on ``val`` (a
    sweep trial measures accuracy and events in one pass and keeps the events).

    The loss is cross-entropy on the time-averaged logits plus
    ``extra_loss(logits, y, activity, x, idx)`` when given (``activity`` is every LIF layer's
    output, recorded with its graph; ``x`` the batch before encoding; ``idx`` its sample indices
    in ``train``).
    Each record holds ``train_loss``, ``train_accuracy``, ``val_accuracy`` (when ``val``),
    ``mean_rate`` (mean LIF output per neuron and step) and ``lr``.
    """
    if len(train) == 0:
        raise ValueError("The training split is empty.")
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.to(device)
    opt = _optimizer(model, cfg)
    per_epoch = math.ceil(len(train) / cfg.batch_size)
    sched = _scheduler(opt, cfg, max(cfg.epochs * per_epoch, 1))
    state = state if state is not None else FitState()
    if state.started:  # go on where a stopped fit of this model left off
        opt.load_state_dict(state.optimizer)
        if sched is not None and state.scheduler is not None:
            sched.load_state_dict(state.scheduler)
        gen.set_state(state.generator)
        torch.set_rng_state(state.rng)
    start = step = state.step
    total = cfg.epochs * per_epoch
    end = total if stop_after is None else min(total, start + max(round(stop_after * per_epoch), 0))
    steps = end - start
    history: list[dict[str, float]] = []
    while step < end:
        epoch = step // per_epoch
        model.train()
        if state.mid_epoch:  # the epoch a stopped fit left inside: its batches and sums so far
            order, done = state.order, state.batch
            loss_sum, correct, rate_sum, seen = state.sums
        else:
            order, done = list(batches(len(train), cfg.batch_size, gen)), 0
            loss_sum = correct = rate_sum = seen = 0.0
        state.order, state.batch = None, 0
        bar = tqdm(
            order[done : done + end - step],
            desc=f"{desc} epoch {epoch + 1}/{cfg.epochs}",
            disable=not show_bar(progress),
            leave=False,
        )
        for idx in bar:
            safe_point()
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
                    f"{desc or 'training'}: the loss is {value} in epoch {epoch + 1} of "
                    f"{cfg.epochs} (batch {done + 1}) at learning rate "
                    f"{opt.param_groups[0]['lr']:.3g} (configured {cfg.lr:g}). Lower the "
                    "learning rate.",
                    epoch=epoch + 1,
                    lr=cfg.lr,
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            step += 1
            done += 1
            if on_step is not None:
                on_step(model, step - start, steps)
                if not model.training:  # a check measured it in eval mode
                    model.train()
            n = len(yb)
            loss_sum += value * n
            correct += (logits.argmax(1) == yb).sum().item()
            rate_sum += mean_rate(acts).item() * n
            seen += n
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}")
        if done < len(order):  # stopped inside the epoch: its record waits for its end
            state.order, state.batch = order, done
            state.sums = (loss_sum, correct, rate_sum, seen)
            break
        record = {
            "epoch": float(epoch + 1),
            "train_loss": loss_sum / seen,
            "train_accuracy": correct / seen,
            "mean_rate": rate_sum / seen,
            "lr": opt.param_groups[0]["lr"],
        }
        if validate is not None:
            record["val_accuracy"] = validate(model)
        elif val is not None and len(val):
            record["val_accuracy"] = evaluate(model, val, cfg.coding, device, seed=cfg.seed)
        history.append(record)
        logger.info(epoch_line(desc, record, cfg.epochs))
        if on_epoch is not None:
            on_epoch(record)
    state.epoch, state.step = step // per_epoch, step
    state.optimizer = opt.state_dict()
    state.scheduler = sched.state_dict() if sched is not None else None
    state.generator, state.rng = gen.get_state(), torch.get_rng_state()
    return history


def mean_rate(activity: list[Tensor]) -> Tensor:
    """Mean output per neuron per step over all recorded LIF layers (all neurons weigh the same)."""
    if not activity:
        return torch.zeros(())
    total = sum(a.sum() for a in activity)
    count = sum(a.numel() for a in activity)
    return total / count


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
