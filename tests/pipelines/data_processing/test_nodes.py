from __future__ import annotations

import torch

from direct2event.data.static import load_digits
from direct2event.pipelines.data_processing.nodes import prepare_data
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
