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
def simulate_counts(
    images: np.ndarray, contrast: float = 0.4, eps: float = 0.1, saccade_ms: int = 105
) -> torch.Tensor:
    """Event counts ``[B, steps, 2, 34, 34]`` (uint8; channel 0 OFF, 1 ON) for 28x28 digits."""
    if contrast <= 0 or eps <= 0:
        raise ValueError(f"contrast and eps must be > 0, got {contrast} and {eps}.")
    offsets = saccade_offsets(saccade_ms)
    margin = int(np.ceil(np.abs(offsets).max())) + 1
    x = torch.as_tensor(np.asarray(images, dtype=np.float32)).reshape(-1, 28, 28)
    x = F.pad(x, (3 + margin,) * 4)  # 28 -> 34 px sensor, plus room to move
    ref = torch.log(_shift(x, *offsets[0], margin) + eps)
    counts = torch.zeros(x.shape[0], len(offsets) - 1, 2, 34, 34, dtype=torch.uint8)
    for step, (dx, dy) in enumerate(offsets[1:]):
        log_i = torch.log(_shift(x, dx, dy, margin) + eps)
        diff = log_i - ref
        n_on = torch.floor(diff / contrast).clamp_(min=0)
        n_off = torch.floor(-diff / contrast).clamp_(min=0)
        ref += (n_on - n_off) * contrast
        counts[:, step, 1] = n_on.to(torch.uint8)
        counts[:, step, 0] = n_off.to(torch.uint8)
    return counts


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


def simulate_frames(
    images: np.ndarray,
    timesteps: int,
    contrast: float = 0.4,
    eps: float = 0.1,
    saccade_ms: int = 105,
    chunk: int = 256,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Simulate every digit and bin its events with tonic's ``ToFrame(n_time_bins=timesteps)``.

    Returns ``(frames [N, T, 2, 34, 34] uint8, events per sample [N])``.
    """
    from tonic.transforms import ToFrame

    to_frame = ToFrame(sensor_size=SENSOR_SIZE, n_time_bins=timesteps)
    frames = np.zeros((len(images), timesteps, 2, 34, 34), dtype=np.uint8)
    n_events = np.zeros(len(images), dtype=np.int64)
    bar = tqdm(total=len(images), desc="simulating saccades", disable=not progress)
    for part in _chunks(len(images), chunk):
        counts = simulate_counts(images[part], contrast, eps, saccade_ms)
        for i, sample in enumerate(counts):
            events = counts_to_events(sample)
            n_events[part.start + i] = len(events)
            if len(events):
                binned = to_frame(events)
                if binned.max() > 255:
                    raise ValueError("More than 255 events in one frame cell; lower timesteps.")
                frames[part.start + i, : len(binned)] = binned
        bar.update(part.stop - part.start)
    bar.close()
    return frames, n_events
