"""Surrogate-to-spike calibration: a monotonic map from D's graded activation to E's spike rate.

On the calibration split, network D (graded, direct input) and network E (binary, unit
thresholds, event input) see the same samples. For every LIF layer and every (sample, neuron)
pair we take D's mean activation per step ``a`` and E's mean spike count per step ``r`` and fit
``g: a -> r`` by isotonic regression (pool-adjacent-violators, PAV). ``g`` says how many spikes
per step E emits, at unit threshold, where D emitted a graded ``a``; threshold scaling uses it.

PAV is written here in numpy (it is the core of the method and keeps this library free of
scikit-learn); ``tests/snn/test_calibration.py`` checks it against sklearn's IsotonicRegression.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from direct2event.snn.activity import record_activity
from direct2event.snn.encoders import InputCoding
from direct2event.snn.models import SpikingNet
from direct2event.snn.training import Split, encoded_batches

MIN_CALIBRATION_SAMPLES = 16


class CalibrationError(ValueError):
    """The calibration data cannot support the map (too few samples, no activity, NaNs)."""


def pav(x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Isotonic (non-decreasing) least-squares fit of ``y`` on ``x``; returns knots ``(xk, yk)``.

    Ties in ``x`` are pooled first; the fitted function is the linear interpolation of the knots
    (constant outside), as sklearn's ``IsotonicRegression(out_of_bounds="clip")`` predicts.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    w = np.ones_like(x) if w is None else np.asarray(w, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    x, y, w = x[order], y[order], w[order]
    ux, start = np.unique(x, return_index=True)
    wsum = np.add.reduceat(w, start)
    ymean = np.add.reduceat(w * y, start) / wsum
    # blocks: value, weight, count of unique x merged
    values: list[float] = []
    weights: list[float] = []
    sizes: list[int] = []
    for v, wt in zip(ymean.tolist(), wsum.tolist(), strict=True):
        values.append(v)
        weights.append(wt)
        sizes.append(1)
        while len(values) > 1 and values[-2] > values[-1]:
            v2, w2, s2 = values.pop(), weights.pop(), sizes.pop()
            total = weights[-1] + w2
            values[-1] = (values[-1] * weights[-1] + v2 * w2) / total
            weights[-1] = total
            sizes[-1] += s2
    fitted = np.repeat(values, sizes)
    # keep only the knots where the fitted value changes (plus the ends), as sklearn does
    keep = np.ones(len(ux), dtype=bool)
    if len(ux) > 2:
        same_prev = np.r_[False, fitted[1:] == fitted[:-1]]
        same_next = np.r_[fitted[:-1] == fitted[1:], False]
        keep = ~(same_prev & same_next)
    return ux[keep], fitted[keep]


@dataclass(frozen=True)
class CalibrationMap:
    """The fitted map ``g`` of one LIF layer and how well it fits."""

    layer: str
    knots_a: np.ndarray
    knots_r: np.ndarray
    rmse: float
    r2: float
    points: int

    def __call__(self, a: Tensor | np.ndarray) -> np.ndarray:
        return np.interp(np.asarray(a, dtype=np.float64), self.knots_a, self.knots_r)

    def is_monotonic(self) -> bool:
        return bool(np.all(np.diff(self.knots_r) >= -1e-12))


@dataclass
class LayerStatistics:
    """Per-channel statistics of one LIF layer on the calibration split."""

    layer: str
    direct_mean: Tensor  # D's mean graded activation per step, per channel  [C]
    event_rate: Tensor  # E's mean spikes per step, per channel (current thresholds)  [C]
    mapped_mean: Tensor  # mean of g(a) per channel: E's rate at unit threshold predicted by g  [C]


def _channel_mean(x: Tensor) -> Tensor:
    """``[N, C, ...]`` -> ``[C]``."""
    return x.transpose(0, 1).reshape(x.shape[1], -1).mean(1)


@torch.no_grad()
def layer_time_means(
    model: SpikingNet,
    data: Split,
    coding: InputCoding,
    device: torch.device,
    batch_size: int | None = None,
    seed: int = 0,
) -> list[Tensor]:
    """Mean output per step of every LIF neuron for every sample: one ``[N, ...]`` per layer."""
    model.to(device).eval()
    per_layer: list[list[Tensor]] = []
    for _, inputs in encoded_batches(data, coding, device, batch_size, seed):
        with record_activity(model, detach=True) as acts:
            model(inputs)
        if not per_layer:
            per_layer = [[] for _ in acts]
        for store, out in zip(per_layer, acts, strict=True):
            store.append(out.mean(0).cpu())
    return [torch.cat(chunks) for chunks in per_layer]


def fit_calibration(
    direct_means: list[Tensor],
    event_means: list[Tensor],
    layer_names: list[str],
    max_points: int = 200_000,
    seed: int = 0,
) -> tuple[list[CalibrationMap], list[LayerStatistics]]:
    """Fit ``g`` per layer from paired (D activation, E unit-threshold rate) time-means."""
    rng = np.random.default_rng(seed)
    maps, stats = [], []
    for name, a_t, r_t in zip(layer_names, direct_means, event_means, strict=True):
        if len(a_t) < MIN_CALIBRATION_SAMPLES:
            raise CalibrationError(
                f"Calibration split has {len(a_t)} samples; the map needs at least "
                f"{MIN_CALIBRATION_SAMPLES}. Raise data.calibration_fraction."
            )
        a = a_t.reshape(-1).numpy()
        r = r_t.reshape(-1).numpy()
        if not (np.isfinite(a).all() and np.isfinite(r).all()):
            raise CalibrationError(
                f"Layer {name}: non-finite activations on the calibration split."
            )
        pick = rng.choice(len(a), size=min(max_points, len(a)), replace=False)
        x, y = a[pick].astype(np.float64), r[pick].astype(np.float64)  # fit figures in float64
        knots_a, knots_r = pav(x, y)
        pred = np.interp(x, knots_a, knots_r)
        resid = y - pred
        var = float(np.var(y))
        rmse = float(np.sqrt(np.mean(resid**2)))
        r2 = 1.0 - float(np.mean(resid**2)) / var if var > 0 else float("nan")
        cmap = CalibrationMap(name, knots_a, knots_r, rmse, r2, len(pick))
        maps.append(cmap)
        mapped = torch.from_numpy(cmap(a_t.numpy()).astype(np.float32)).view_as(a_t)
        stats.append(
            LayerStatistics(name, _channel_mean(a_t), _channel_mean(r_t), _channel_mean(mapped))
        )
    return maps, stats
