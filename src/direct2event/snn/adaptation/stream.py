"""The stream test: E sample by sample over clean, shifted and clean data, adapting online;
how fast each method settles after each change, and where."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from direct2event.snn.adaptation.core import (
    AdaptationConfig,
    LayerReference,
    OnlineAdaptation,
    frozen,
)
from direct2event.snn.encoders import InputCoding
from direct2event.snn.models import SpikingNet
from direct2event.snn.training import Split, encoded_batches


def plateau(accuracy: list[float], fraction: float = 1.0 / 3.0) -> float:
    """The level a trace settles at: its mean over the last ``fraction`` of the points."""
    if not accuracy:
        raise ValueError("plateau of an empty trace.")
    n = max(1, round(len(accuracy) * fraction))
    return float(sum(accuracy[-n:]) / n)


SETTLE_STANDARD_ERRORS = 2.0  # a settled curve's points lie within this many of its plateau


def settle_tolerance(plateau_accuracy: float, held_out: int, tolerance: float) -> float:
    """How close to its plateau a held-out curve must stay to count as settled: ``tolerance``,
    or two binomial standard errors of the plateau, ``2 sqrt(p (1 - p) / n)`` on the
    ``held_out`` samples, where that is wider. A state that adapts on every sample moves a
    little with each one, and near a shift's plateau (p about 0.5) a move of a few samples'
    worth flips a few held-out answers: a held-out score cannot tell such moves from a settled
    state. With one standard error, a third of a settled curve's points would fall outside by
    chance, and as every later point must stay inside, a settled method read as never settling
    (simulated N-MNIST under background noise: points 0.587 and 0.500 around their plateau
    0.543, 1.06 standard errors each way); two hold 95 % of them."""
    p = min(max(plateau_accuracy, 0.0), 1.0)
    return max(tolerance, SETTLE_STANDARD_ERRORS * math.sqrt(p * (1.0 - p) / max(held_out, 1)))


def recovery_samples(
    positions: list[int], accuracy: list[float], target: float, tolerance: float = 0.01
) -> int | None:
    """Samples after the change until the trace comes within ``tolerance`` of ``target`` and
    stays there (the first position from which every later point is within it); None: never."""
    if len(positions) != len(accuracy):
        raise ValueError(f"{len(positions)} positions but {len(accuracy)} accuracies.")
    found: int | None = None
    for pos, acc in zip(positions, accuracy, strict=True):
        if abs(acc - target) <= tolerance + 1e-12:
            if found is None:
                found = pos
        else:
            found = None
    return found


@torch.no_grad()
def _accuracy(
    model: SpikingNet, data: Split, coding: InputCoding, device: torch.device, seed: int
) -> float:
    correct = 0
    for idx, inputs in encoded_batches(data, coding, device, seed=seed):
        correct += int((model(inputs).argmax(1).cpu() == data.y[idx]).sum())
    return correct / max(len(data), 1)


@torch.no_grad()
def stream(
    model: SpikingNet,
    segments: list[tuple[Split, Split]],
    coding: InputCoding,
    device: torch.device,
    adaptation: OnlineAdaptation | None,
    checkpoint_every: int = 20,
    seed: int = 0,
) -> dict[str, list]:
    """Run E sample by sample over consecutive ``(stream, held_out)`` segments (e.g. clean, then
    shifted, then clean), adapting online; every ``checkpoint_every`` samples the current state is
    evaluated (counted from the segment's start), frozen, on the segment's held-out samples (a smooth curve of what the adapted state
    is worth, unlike the noisy per-sample hits).

    Returns ``correct`` (0/1 per stream sample), ``segment`` (its index), and ``positions`` /
    ``held_out_accuracy`` / ``checkpoint_segment`` of the checkpoints (positions count samples
    from the start of the stream)."""
    model.to(device).eval()
    out: dict[str, list] = {
        "correct": [],
        "segment": [],
        "positions": [],
        "held_out_accuracy": [],
        "checkpoint_segment": [],
    }
    seen = 0
    for k, (part, held_out) in enumerate(segments):
        if adaptation is None:  # nothing adapts: one sample at a time is the same as a batch
            first = _accuracy(model, held_out, coding, device, seed)
            for idx, inputs in encoded_batches(part, coding, device, seed=seed + k):
                hits = model(inputs).argmax(1).cpu() == part.y[idx]
                out["correct"] += [int(h) for h in hits]
            out["segment"] += [k] * len(part)
            for i in range(0, len(part), checkpoint_every):
                out["positions"].append(seen + i)
                out["checkpoint_segment"].append(k)
                out["held_out_accuracy"].append(first)
            seen += len(part)
            continue
        for i, (idx, inputs) in enumerate(
            encoded_batches(part, coding, device, batch_size=1, seed=seed + k)
        ):
            if i % checkpoint_every == 0:
                with frozen(adaptation):
                    out["held_out_accuracy"].append(
                        _accuracy(model, held_out, coding, device, seed)
                    )
                out["positions"].append(seen)
                out["checkpoint_segment"].append(k)
            out["correct"].append(int(model(inputs).argmax(1).cpu()[0] == part.y[idx][0]))
            out["segment"].append(k)
            seen += 1
    if adaptation is None:
        out["held_out_accuracy"].append(out["held_out_accuracy"][-1])
    else:
        with frozen(adaptation):
            out["held_out_accuracy"].append(_accuracy(model, segments[-1][1], coding, device, seed))
    out["positions"].append(seen)
    out["checkpoint_segment"].append(len(segments) - 1)
    return out


@dataclass(frozen=True)
class StreamConfig:
    """How the stream test measures: the held-out score every ``checkpoint_every`` samples, the
    online accuracy over a sliding ``window``, and "settled" as within ``tolerance`` of the
    plateau, or within the plateau's binomial standard error on the held-out samples where that
    is wider (:func:`settle_tolerance`); ``seed`` of the input encoding."""

    checkpoint_every: int = 25
    window: int = 50
    tolerance: float = 0.01
    seed: int = 0


def stream_test(
    model: SpikingNet,
    refs: list[LayerReference],
    segments: list[tuple[Split, Split]],
    methods: dict[str, AdaptationConfig | None],
    coding: InputCoding,
    device: torch.device,
    cfg: StreamConfig = StreamConfig(),
    input_reference: LayerReference | None = None,
) -> dict[str, Any]:
    """The stream test: :func:`stream` over three equal segments (clean, shifted, clean) for E
    unadapted (a method of config None) and with each method (its encoder adapted too where it
    does that and ``input_reference`` is given). Per method: the sliding-window
    accuracy, the held-out curve, and for the change to the shift (segment 1) and back (2) the
    plateau and the samples until the curve stays within :func:`settle_tolerance` of it (the
    tolerance used is in the result)."""
    checkpoint_every, window, tolerance, seed = (
        cfg.checkpoint_every,
        cfg.window,
        cfg.tolerance,
        cfg.seed,
    )
    n = len(segments[0][0])
    out: dict[str, Any] = {"segment": n, "window": window, "methods": {}}
    for method, config in methods.items():
        if config is None:
            trace = stream(model, segments, coding, device, None, checkpoint_every, seed)
        else:
            with OnlineAdaptation(model, refs, config, input_reference) as adapt:
                trace = stream(
                    model, segments, adapt.coding(coding), device, adapt, checkpoint_every, seed
                )
        result: dict[str, Any] = {
            "sliding_accuracy": sliding_accuracy(trace["correct"], window),
            "positions": trace["positions"],
            "held_out_accuracy": trace["held_out_accuracy"],
        }
        points = list(
            zip(trace["positions"], trace["held_out_accuracy"], trace["checkpoint_segment"])
        )
        for seg, label in ((1, "to_shift"), (2, "back")):
            pos = [q - seg * n for q, _, s in points if s == seg]
            acc = [v for _, v, s in points if s == seg]
            result[f"plateau_{label}"] = plateau(acc)
            result[f"tolerance_{label}"] = settle_tolerance(
                result[f"plateau_{label}"], len(segments[seg][1]), tolerance
            )
            result[f"recovery_{label}"] = recovery_samples(
                pos, acc, result[f"plateau_{label}"], result[f"tolerance_{label}"]
            )
        out["methods"][method] = result
    return out


def sliding_accuracy(correct: list[int], window: int) -> list[float]:
    """Accuracy over the last ``window`` samples at every position (fewer at the start)."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}.")
    c = torch.tensor(correct, dtype=torch.float64).cumsum(0)
    out = []
    for i in range(len(correct)):
        lo = i - window
        total = c[i] - (c[lo] if lo >= 0 else 0.0)
        out.append(float(total) / (i - max(lo, -1)))
    return out
