from __future__ import annotations

import numpy as np
import pytest
import torch

from direct2event.data.containers import LabelledArrays, RawData
from direct2event.data.static import load_digits
from direct2event.pipelines.data_processing.nodes import cap_frames, prepare_data
from tests.pipelines.conftest import tiny


def test_prepare_data_splits_by_the_run_seed() -> None:
    raw = load_digits()
    a = prepare_data(raw, tiny())
    assert a.sizes() == {"train": 1222, "calibration": 72, "validation": 144, "test": 359}
    assert a.input_shape == (1, 8, 8) and a.classes == 10
    again, other = prepare_data(raw, tiny()), prepare_data(raw, tiny(seed=1))
    assert torch.equal(again.calibration.x, a.calibration.x)
    assert not torch.equal(other.calibration.x, a.calibration.x)  # another seed, other samples
    assert torch.equal(other.test.x, a.test.x)  # the test split never moves
    small = prepare_data(raw, tiny(data={"max_test": 100, "max_train": 300}))
    assert len(small.test) == 100 and len(small.train) == 300


def test_event_frames_capped_in_every_part_and_images_refused() -> None:
    rng = np.random.default_rng(0)

    def part(n: int) -> LabelledArrays:
        x = rng.poisson(1.5, size=(n, 4, 2, 6, 6)).astype(np.uint8)
        return LabelledArrays(x, rng.integers(0, 3, n))

    raw = RawData("events", "events", 3, train=part(40), test=part(10), val=part(8))
    capped = cap_frames(raw, 1)
    for name in ("train", "test", "val"):
        before, after = getattr(raw, name).x, getattr(capped, name).x
        assert before.max() > 1 and after.max() == 1  # the source's frames stay as they were
        assert np.array_equal(after, (before > 0).astype(np.uint8))
        assert np.array_equal(getattr(capped, name).y, getattr(raw, name).y)
    with pytest.raises(ValueError, match="holds images: remove it"):
        cap_frames(load_digits(), 1)
