from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tonic.datasets import NMNIST
from tonic.transforms import Denoise, ToFrame

from direct2event.data.nmnist_sim import (
    SENSOR_SIZE,
    bin_counts,
    counts_to_events,
    saccade_offsets,
    signed_counts,
    simulate_counts,
    simulate_frames,
)
from direct2event.data.static import load_mnist


@pytest.fixture(scope="module")
def digits_28() -> np.ndarray:
    return load_mnist(None).test.x[:16, 0]


@pytest.fixture(scope="module")
def counts(digits_28):
    return simulate_counts(digits_28)


def test_saccade_path_is_a_closed_centred_triangle() -> None:
    path = saccade_offsets(105)
    assert path.shape == (316, 2)
    assert np.allclose(path[0], path[-1])
    assert np.allclose(path.max(0) + path.min(0), 0)
    assert np.allclose(path[105] - path[0], [3.5, 7.0])


def test_event_count_polarity_and_tonic_format(counts) -> None:
    events = [counts_to_events(c) for c in counts]
    n = np.array([len(e) for e in events])
    assert 3000 < n.mean() < 7000  # a real N-MNIST digit has about 4.3k events
    on = np.mean([e["p"].mean() for e in events])
    assert 0.4 < on < 0.6  # a closed saccade path brightens as much as it darkens
    e = events[0]
    assert e.dtype == NMNIST.dtype
    assert e["x"].max() < 34 and e["y"].max() < 34 and e["x"].min() >= 0
    assert np.all(np.diff(e["t"]) >= 0)
    # tonic transforms apply unchanged
    assert 0 < len(Denoise(filter_time=10_000)(e)) <= len(e)


@pytest.mark.parametrize("timesteps", [4, 7, 8])
def test_vectorised_binning_equals_tonic_to_frame(counts, timesteps: int) -> None:
    ours = bin_counts(counts, timesteps).numpy()
    for i in range(len(counts)):
        ref = ToFrame(sensor_size=SENSOR_SIZE, n_time_bins=timesteps)(counts_to_events(counts[i]))
        assert np.array_equal(ours[i], ref)


def _floor_rule_counts(images: np.ndarray, contrast: float = 0.4, eps: float = 0.1) -> torch.Tensor:
    """The sensor as METHOD.md states it, ``[B, steps, 2, 34, 34]``: images ``[B, H, W]``,
    ``floor(+-(L - L_ref) / C)`` events per polarity, ``L_ref`` moved by ON - OFF times C."""
    offsets = saccade_offsets(105)
    m = int(np.ceil(np.abs(offsets).max())) + 1
    x = F.pad(torch.as_tensor(images, dtype=torch.float32), (3 + m,) * 4)

    def level(dx: float, dy: float) -> torch.Tensor:
        ix, iy = int(np.floor(dx)), int(np.floor(dy))
        fx, fy = dx - ix, dy - iy
        out = None
        for ay, wy in ((0, 1.0 - fy), (1, fy)):
            for ax, wx in ((0, 1.0 - fx), (1, fx)):
                if wy * wx != 0.0:
                    term = x[:, m - iy - ay : m - iy - ay + 34, m - ix - ax : m - ix - ax + 34]
                    out = term * (wy * wx) if out is None else out + term * (wy * wx)
        return torch.log(out + eps)

    ref, steps = level(*offsets[0]), []
    for dx, dy in offsets[1:]:
        diff = level(dx, dy) - ref
        on = torch.floor(diff / contrast).clamp(min=0)
        off = torch.floor(-diff / contrast).clamp(min=0)
        ref = ref + (on - off) * contrast
        steps.append(torch.stack((off, on), dim=1))
    return torch.stack(steps, dim=1).to(torch.uint8)


@pytest.fixture(scope="module")
def odd_digits(digits_28) -> np.ndarray:
    """Real digits, a blank one and faint dots whose events start late and end early."""
    dots = np.zeros((7, 28, 28), dtype=np.float32)
    for i, v in enumerate((0.08, 0.1, 0.12, 0.15, 0.2, 0.25, 1.0)):
        dots[i, 14, 14] = v
    return np.concatenate([digits_28[:8], np.zeros((1, 28, 28), np.float32), dots])


def test_truncated_rule_equals_the_floor_rule_to_the_bit(odd_digits) -> None:
    assert torch.equal(simulate_counts(odd_digits), _floor_rule_counts(odd_digits))
    signed = signed_counts(odd_digits)
    assert signed.dtype == torch.int8 and signed.shape == (315, 34, 34, 16)


@pytest.mark.parametrize("timesteps", [7, 8])
def test_one_pass_simulation_equals_binned_stored_counts(odd_digits, timesteps: int) -> None:
    counts = simulate_counts(odd_digits)
    active = counts.flatten(2).amax(2) > 0
    first = active.float().argmax(1)
    last = 314 - active.flip(1).float().argmax(1)
    # both ways through the one-pass binning: digits whose events start at different steps,
    # and digits whose last event is before the last step (binned again from stored counts)
    assert len(set(first[:8].tolist())) > 1 and (last[active.any(1)] < 314).sum() >= 3
    frames, n_events = simulate_frames(odd_digits, timesteps, chunk=5, progress=False)
    assert frames.dtype == np.uint8 and frames.shape == (16, timesteps, 2, 34, 34)
    assert np.array_equal(frames, bin_counts(counts, timesteps).numpy())
    assert np.array_equal(n_events, counts.flatten(1).sum(1).numpy())
    assert n_events[8] == 0 and frames[8].sum() == 0  # the blank digit


@pytest.mark.parametrize(
    ("images", "contrast", "match"),
    [
        (np.full((2, 28, 28), 255.0), 0.4, "divide 8-bit images by 255"),
        (np.zeros((2, 28, 28)), 0.01, "contrast 0.01 is too small"),
        (np.zeros((2, 28, 28)), 0.0, "must be > 0"),
    ],
)
def test_settings_the_simulation_cannot_run_are_refused_by_name(images, contrast, match) -> None:
    with pytest.raises(ValueError, match=match):
        simulate_frames(images, 8, contrast=contrast, progress=False)
