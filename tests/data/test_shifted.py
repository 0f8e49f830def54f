"""The shift benchmark's samples: disjoint parts, shifted alike whatever the order of asks."""

from __future__ import annotations

import pytest
import torch

from direct2event.data.shifted import ShiftedSamples
from direct2event.snn.shifts import contrast, gaussian_noise

TABLE = {"gaussian_noise": (gaussian_noise, [0.1, 0.2, 0.3]), "contrast": (contrast, [0.6, 0.4])}


def test_parts_are_disjoint_shuffled_and_sized(digits_splits) -> None:
    samples = ShiftedSamples(TABLE, 0, 100, 40, images=digits_splits.test)
    clean, extra = samples("clean", 0, "eval"), samples("clean", 0, "extra")
    assert (len(clean), len(extra)) == (100, 40)
    assert not torch.equal(clean.x, digits_splits.test.x[:100])  # shuffled with the seed
    order = torch.randperm(len(digits_splits.test), generator=torch.Generator().manual_seed(0))
    assert torch.equal(clean.y, digits_splits.test.y[order[:100]])
    assert torch.equal(extra.y, digits_splits.test.y[order[100:140]])
    # fewer samples than asked: the evaluation part keeps at least half
    small = ShiftedSamples(TABLE, 0, 300, 300, images=digits_splits.test)
    assert len(small("clean", 0, "eval")) == len(digits_splits.test) // 2
    # the stream test's own samples come after the others, as many as are left
    streamed = ShiftedSamples(TABLE, 0, 100, 40, images=digits_splits.test, n_stream=90)
    assert torch.equal(streamed("clean", 0, "stream").y, digits_splits.test.y[order[140:230]])
    assert len(small("clean", 0, "stream")) == 0  # none asked, none left
    short = ShiftedSamples(TABLE, 0, 100, 40, images=digits_splits.test, n_stream=10_000)
    assert len(short("clean", 0, "stream")) == len(digits_splits.test) - 140


def test_a_shift_is_the_same_whatever_was_asked_before(digits_splits) -> None:
    first = ShiftedSamples(TABLE, 3, 80, 20, images=digits_splits.test)
    noisy = first("gaussian_noise", 2, "eval")
    assert first("gaussian_noise", 2, "eval") is noisy  # made once, then cached
    other = ShiftedSamples(TABLE, 3, 80, 20, images=digits_splits.test)
    other("contrast", 1, "extra")
    other("gaussian_noise", 1, "eval")
    assert torch.equal(other("gaussian_noise", 2, "eval").x, noisy.x)
    clean = first("clean", 0, "eval").x
    assert (noisy.x - clean).abs().mean() > 0.01  # noise was added
    assert not torch.equal(first("gaussian_noise", 2, "extra").x[:5], noisy.x[:5])


def test_it_needs_images_or_recordings_not_both(digits_splits) -> None:
    with pytest.raises(ValueError, match="images or event recordings"):
        ShiftedSamples(TABLE, 0, 10, 5)
