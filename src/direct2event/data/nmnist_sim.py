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
    """Bilinear translation by (dx, dy) px of ``[B, H + 2m, W + 2m]`` images padded by ``m``.

    The same shift applies to the whole batch, so it is four weighted slices of the padded
    images (much faster on a CPU than ``grid_sample``); ``out[i, j] = I(i - dy, j - dx)``.
    """
    h = padded.shape[-2] - 2 * margin
    w = padded.shape[-1] - 2 * margin
    ix, iy = int(np.floor(dx)), int(np.floor(dy))
    fx, fy = dx - ix, dy - iy
    out = torch.zeros(padded.shape[0], h, w, dtype=padded.dtype)
    for ay, wy in ((0, 1.0 - fy), (1, fy)):
        for ax, wx in ((0, 1.0 - fx), (1, fx)):
            if wy * wx == 0.0:
                continue
            r0, c0 = margin - iy - ay, margin - ix - ax
            out += (wy * wx) * padded[:, r0 : r0 + h, c0 : c0 + w]
    return out


@torch.no_grad()
def saccade_steps(
    images: np.ndarray, contrast: float = 0.4, eps: float = 0.1, saccade_ms: int = 105
) -> Iterator[torch.Tensor]:
    """Event counts of every 1 ms step, ``[B, 2, 34, 34]`` float (channel 0 OFF, 1 ON)."""
    if contrast <= 0 or eps <= 0:
        raise ValueError(f"contrast and eps must be > 0, got {contrast} and {eps}.")
    offsets = saccade_offsets(saccade_ms)
    margin = int(np.ceil(np.abs(offsets).max())) + 1
    x = torch.as_tensor(np.asarray(images, dtype=np.float32)).reshape(-1, 28, 28)
    x = F.pad(x, (3 + margin,) * 4)  # 28 -> 34 px sensor, plus room to move
    ref = torch.log(_shift(x, *offsets[0], margin) + eps)
    for dx, dy in offsets[1:]:
        diff = torch.log(_shift(x, dx, dy, margin) + eps) - ref
        n_on = torch.floor(diff / contrast).clamp_(min=0)
        n_off = torch.floor(-diff / contrast).clamp_(min=0)
        ref += (n_on - n_off) * contrast
        yield torch.stack((n_off, n_on), dim=1)


def simulate_counts(
    images: np.ndarray, contrast: float = 0.4, eps: float = 0.1, saccade_ms: int = 105
) -> torch.Tensor:
    """All step counts ``[B, steps, 2, 34, 34]`` (uint8) of 28x28 digits."""
    return torch.stack(
        [c.to(torch.uint8) for c in saccade_steps(images, contrast, eps, saccade_ms)], dim=1
    )


def counts_to_events(counts: torch.Tensor | np.ndarray, step_us: int = 1000) -> np.ndarray:
    """One sample's counts ``[steps, 2, H, W]`` to a time-sorted tonic event array."""
    c = np.asarray(counts)
    step, pol, y, x = np.nonzero(c)
    reps = c[step, pol, y, x].astype(np.int64)
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


def simulate_frames(
    images: np.ndarray,
    timesteps: int,
    contrast: float = 0.4,
    eps: float = 0.1,
    saccade_ms: int = 105,
    chunk: int = 512,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Simulate every digit and bin its events to ``timesteps`` frames, as :func:`bin_counts`.

    Two passes over the (cheap) simulation per chunk, so the 1 ms counts are never stored: the
    first finds when each digit's events start and end (which fixes its bins), the second adds
    each step's counts into its bin. Returns ``(frames [N, T, 2, 34, 34] uint8, events [N])``.
    """
    frames = np.zeros((len(images), timesteps, 2, 34, 34), dtype=np.uint8)
    n_events = np.zeros(len(images), dtype=np.int64)
    bar = tqdm(total=len(images), desc="simulating saccades", disable=not progress)
    for part in _chunks(len(images), chunk):
        active, total = [], torch.zeros(part.stop - part.start, dtype=torch.float64)
        for counts in saccade_steps(images[part], contrast, eps, saccade_ms):
            per_sample = counts.flatten(1).sum(1)
            active.append(per_sample > 0)
            total += per_sample
        bins = _bin_index(torch.stack(active, dim=1), timesteps, 1000)
        binned = torch.zeros(len(total), timesteps, 2, 34, 34)
        for step, counts in enumerate(saccade_steps(images[part], contrast, eps, saccade_ms)):
            _accumulate(binned, counts, bins[:, step])
        if binned.max() > 255:
            raise ValueError("More than 255 events in one frame cell; use more timesteps.")
        frames[part] = binned.to(torch.uint8).numpy()
        n_events[part] = total.long().numpy()
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
