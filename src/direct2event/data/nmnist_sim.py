"""Simulated N-MNIST: events made from MNIST digits by simulating a moving DVS sensor.

Follows the recording method of Orchard et al. 2015 (N-MNIST), with a simulated sensor instead
of a real camera:

1. pad the 28x28 digit to 34x34;
2. move it along three saccades (+3.5, +7), (+3.5, -7), (-7, 0) px (x, y), each
   ``saccade_ms`` long, in 1 ms steps, with bilinear interpolation (the path is centred);
3. every pixel keeps a reference log-intensity ``L_ref = log(I + eps)``; when
   ``|L - L_ref| >= C`` it emits ``floor(|L - L_ref| / C)`` events of polarity
   ``sign(L - L_ref)`` and moves ``L_ref`` by that many ``C``.

Events use tonic's dtype ``(x, y, t, p)`` (t in microseconds, p = 1 for ON) and sensor size
``(34, 34, 2)``, so tonic's transforms apply unchanged. Results on these data are always
labelled *simulated*, never N-MNIST.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

SENSOR_SIZE = (34, 34, 2)
EVENT_DTYPE = np.dtype([("x", int), ("y", int), ("t", int), ("p", int)])
SACCADES = ((3.5, 7.0), (3.5, -7.0), (-7.0, 0.0))


def saccade_offsets(saccade_ms: int = 105) -> np.ndarray:
    """Image offset (x, y) in px at every 1 ms step, shape ``[3 * saccade_ms + 1, 2]``, centred."""
    points = [np.zeros(2)]
    start = np.zeros(2)
    for move in SACCADES:
        end = start + np.asarray(move)
        frac = np.arange(1, saccade_ms + 1)[:, None] / saccade_ms
        points.extend(start + frac * (end - start))
        start = end
    path = np.stack(points)
    return path - (path.max(0) + path.min(0)) / 2


def _shift(padded: torch.Tensor, dx: float, dy: float, margin: int) -> torch.Tensor:
    """Bilinear translation by (dx, dy) px of ``[H + 2m, W + 2m, B]`` images padded by ``m``.

    The same shift applies to the whole batch, so it is four weighted slices of the padded
    images (much faster on a CPU than ``grid_sample``); ``out[i, j] = I(i - dy, j - dx)``.
    The batch is the innermost axis, so every slice is a few long contiguous runs (twice as fast
    as slicing ``[B, H, W]``); the terms are added in a fixed order.
    """
    h = padded.shape[0] - 2 * margin
    w = padded.shape[1] - 2 * margin
    ix, iy = int(np.floor(dx)), int(np.floor(dy))
    fx, fy = dx - ix, dy - iy
    out: torch.Tensor | None = None
    for ay, wy in ((0, 1.0 - fy), (1, fy)):
        for ax, wx in ((0, 1.0 - fx), (1, fx)):
            if wy * wx == 0.0:
                continue
            r0, c0 = margin - iy - ay, margin - ix - ax
            term = padded[r0 : r0 + h, c0 : c0 + w] * (wy * wx)
            out = term if out is None else out.add_(term)
    assert out is not None  # the four weights sum to 1
    return out


@torch.no_grad()
def _steps(
    images: np.ndarray, contrast: float, eps: float, saccade_ms: int
) -> Iterator[torch.Tensor]:
    """Every 1 ms step's signed event counts ``[34, 34, B]`` (float, whole numbers).

    A value ``k > 0`` is ``k`` ON events, ``k < 0`` is ``-k`` OFF events. With
    ``k = trunc((L - L_ref) / C)`` and ``L_ref`` moved by ``k * C`` this is the method's
    ``floor(+-(L - L_ref) / C)`` rule to the bit (IEEE division is odd in its numerator), in
    half the tensor operations. The simulation is most of simulated N-MNIST's data preparation,
    so it is written for speed: batch innermost, one buffer per step.
    """
    offsets = saccade_offsets(saccade_ms)
    margin = int(np.ceil(np.abs(offsets).max())) + 1
    x = torch.as_tensor(np.asarray(images, dtype=np.float32)).reshape(-1, 28, 28)
    x = F.pad(x, (3 + margin,) * 4).permute(1, 2, 0).contiguous()  # 34 px sensor + room to move
    ref = torch.log(_shift(x, *offsets[0], margin).add_(eps))
    for dx, dy in offsets[1:]:
        # (level - ref) / C, truncated, in one buffer
        k = torch.log(_shift(x, dx, dy, margin).add_(eps)).sub_(ref).div_(contrast).trunc_()
        ref.add_(k * contrast)
        yield k


def _check(images: np.ndarray, contrast: float, eps: float) -> None:
    """Refuse settings the simulation cannot run, before it runs."""
    if contrast <= 0 or eps <= 0:
        raise ValueError(f"contrast and eps must be > 0, got {contrast} and {eps}.")
    lo, hi = (float(np.min(images)), float(np.max(images))) if np.size(images) else (0, 0)
    if lo < 0 or hi > 1:
        raise ValueError(
            f"Digits must be intensities in [0, 1], got [{lo}, {hi}]; divide 8-bit images by 255."
        )
    # a pixel's level spans at most log(1 + eps) - log(eps): that many / C events in a step
    if np.log1p(1 / eps) / contrast >= 127:
        raise ValueError(
            f"contrast {contrast} is too small for eps {eps}: a pixel could emit over 127 events "
            f"in one 1 ms step; use contrast >= {np.log1p(1 / eps) / 126:.3g}."
        )


def signed_counts(
    images: np.ndarray, contrast: float = 0.4, eps: float = 0.1, saccade_ms: int = 105
) -> torch.Tensor:
    """Every 1 ms step's events of 28x28 digits in [0, 1], ``[steps, 34, 34, B]`` int8
    (``k > 0``: ``k`` ON events, ``k < 0``: ``-k`` OFF events)."""
    _check(images, contrast, eps)
    out = torch.empty(3 * saccade_ms, 34, 34, len(images), dtype=torch.int8)
    for step, k in enumerate(_steps(images, contrast, eps, saccade_ms)):
        out[step] = k
    return out


def _polarities(signed: torch.Tensor) -> torch.Tensor:
    """``[steps, H, W, B]`` signed counts to ``[B, steps, 2, H, W]`` uint8 counts (channel 0
    OFF, 1 ON)."""
    signed = signed.movedim(-1, 0)
    counts = torch.empty(
        (signed.shape[0], signed.shape[1], 2, *signed.shape[2:]), dtype=torch.uint8
    )
    counts[:, :, 0] = signed.neg().clamp_(min=0)  # written in place: no stacked int8 copy
    counts[:, :, 1] = signed.clamp(min=0)
    return counts


def simulate_counts(
    images: np.ndarray, contrast: float = 0.4, eps: float = 0.1, saccade_ms: int = 105
) -> torch.Tensor:
    """All step counts ``[B, steps, 2, 34, 34]`` (uint8) of 28x28 digits."""
    return _polarities(signed_counts(images, contrast, eps, saccade_ms))


def counts_to_events(counts: torch.Tensor | np.ndarray, step_us: int = 1000) -> np.ndarray:
    """One sample's counts ``[steps, 2, H, W]`` to a time-sorted tonic event array."""
    c = np.ascontiguousarray(counts)
    flat = np.flatnonzero(c)  # twice as fast as a 4-d nonzero, the same events in the same order
    step, pol, y, x = np.unravel_index(flat, c.shape)
    reps = c.reshape(-1)[flat].astype(np.int64)
    events = np.empty(int(reps.sum()), dtype=EVENT_DTYPE)
    events["t"] = np.repeat(step.astype(np.int64) * step_us + step_us, reps)
    events["p"] = np.repeat(pol, reps)
    events["y"] = np.repeat(y, reps)
    events["x"] = np.repeat(x, reps)
    return events


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def _bin_index(active: torch.Tensor, timesteps: int, step_us: int) -> torch.Tensor:
    """Time bin of every (sample, step), -1 where dropped; tonic's ``SliceByTimeBins`` rule."""
    steps = active.shape[1]
    t = (torch.arange(steps) + 1) * step_us
    t_first = torch.where(active, t, torch.iinfo(torch.int64).max).amin(1)
    t_last = torch.where(active, t, -1).amax(1)
    window = torch.clamp((t_last - t_first) // timesteps, min=0).view(-1, 1)
    index = (t.view(1, -1) - t_first.view(-1, 1)) // window.clamp(min=1)
    keep = active & (window > 0) & (index < timesteps)
    return torch.where(keep, index, -1)


def _accumulate(frames: torch.Tensor, counts: torch.Tensor, bins: torch.Tensor) -> None:
    """Add one step's counts ``[B, ...]`` into ``frames[B, T, ...]`` at time bins ``bins[B]``."""
    (rows,) = torch.nonzero(bins >= 0, as_tuple=True)
    if len(rows):
        frames[rows, bins[rows]] += counts[rows].float()


def bin_counts(counts: torch.Tensor, timesteps: int, step_us: int = 1000) -> torch.Tensor:
    """Frames ``[B, T, 2, H, W]`` from step counts ``[B, steps, 2, H, W]``, binned as tonic does.

    Identical to ``tonic.transforms.ToFrame(n_time_bins=T)`` on each sample's event array
    (:func:`counts_to_events`): windows of ``(t_last - t_first) // T`` microseconds from the first
    event, events at or after ``t_first + T * window`` dropped. Binning the step counts directly,
    vectorised over the batch, avoids building and binning some 5k events per digit one sample
    at a time (minutes for 65k digits); ``tests/data/test_nmnist_sim.py`` checks the equality.
    """
    bins = _bin_index(counts.flatten(2).amax(2) > 0, timesteps, step_us)
    frames = torch.zeros(counts.shape[0], timesteps, *counts.shape[2:])
    for step in range(counts.shape[1]):
        _accumulate(frames, counts[:, step], bins[:, step])
    return frames


@torch.no_grad()
def _simulate_chunk(
    images: np.ndarray, timesteps: int, contrast: float, eps: float, saccade_ms: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunk's frames ``[B, T, 2, 34, 34]`` (float, whole numbers) and events ``[B]``.

    A digit's bins are fixed by its first and its last event. The first is seen as it happens
    (before it the digit adds nothing anywhere); the last is taken to be in the last step, as
    for nearly every digit, so each step is added into its bins as it is simulated: one pass,
    nothing stored. The few digits whose last step has no event are simulated again, stored and
    binned by :func:`bin_counts`.
    """
    steps, n = 3 * saccade_ms, len(images)
    t = (np.arange(steps) + 1) * 1000
    t_first = np.full(n, -1)
    net = torch.zeros(timesteps, 34, 34, n)
    size = torch.zeros(timesteps, 34, 34, n)
    per_step = torch.empty(steps, n)
    for step, k in enumerate(_steps(images, contrast, eps, saccade_ms)):
        magnitude = k.abs()
        per_step[step] = magnitude.sum((0, 1))
        t_first[(t_first < 0) & (per_step[step] > 0).numpy()] = t[step]
        started = t_first >= 0
        window = np.maximum((t[-1] - t_first) // timesteps, 1)
        index = np.where(started, (t[step] - t_first) // window, timesteps)
        bins = np.unique(index[started])
        if len(bins) == 1 and started.all() and bins[0] < timesteps:
            net[bins[0]] += k
            size[bins[0]] += magnitude
            continue
        for b in bins[bins < timesteps]:  # digits in other bins (or none) add 0 here
            weight = torch.as_tensor(index == b, dtype=k.dtype)
            net[b].addcmul_(k, weight)
            size[b].addcmul_(magnitude, weight)
    # ON = (|k| + k) / 2, OFF = (|k| - k) / 2, summed per bin: exact in float32 for whole numbers
    frames = torch.stack(((size - net) / 2, (size + net) / 2), dim=1).movedim(-1, 0)
    guessed = (per_step[-1] > 0).numpy() & ((t[-1] - t_first) // timesteps > 0)
    (others,) = np.nonzero(~guessed)
    if len(others):
        counts = simulate_counts(images[others], contrast, eps, saccade_ms)
        frames[torch.as_tensor(others)] = bin_counts(counts, timesteps)
    return frames, per_step.sum(0)


def simulate_frames(
    images: np.ndarray,
    timesteps: int,
    contrast: float = 0.4,
    eps: float = 0.1,
    saccade_ms: int = 105,
    chunk: int = 256,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Simulate every digit and bin its events to ``timesteps`` frames, as :func:`bin_counts`.

    Returns ``(frames [N, T, 2, 34, 34] uint8, events [N])``.
    """
    _check(images, contrast, eps)
    frames = np.zeros((len(images), timesteps, 2, 34, 34), dtype=np.uint8)
    n_events = np.zeros(len(images), dtype=np.int64)
    bar = tqdm(total=len(images), desc="simulating saccades", disable=not progress)
    for part in _chunks(len(images), chunk):
        binned, events = _simulate_chunk(images[part], timesteps, contrast, eps, saccade_ms)
        if binned.max() > 255:
            raise ValueError("More than 255 events in one frame cell; use more timesteps.")
        frames[part] = binned.to(torch.uint8).numpy()
        n_events[part] = events.long().numpy()
        bar.update(part.stop - part.start)
    bar.close()
    return frames, n_events


def simulate_recordings(
    images: np.ndarray,
    contrast: float = 0.4,
    eps: float = 0.1,
    saccade_ms: int = 105,
    chunk: int = 256,
) -> list[np.ndarray]:
    """Every digit's simulated recording as a tonic event array (for event shifts, which act on
    events before binning; :func:`simulate_frames` never builds them, for speed)."""
    out: list[np.ndarray] = []
    for part in _chunks(len(images), chunk):
        counts = simulate_counts(images[part], contrast, eps, saccade_ms)
        out.extend(counts_to_events(c) for c in counts.numpy())
    return out
