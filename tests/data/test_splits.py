"""Splits: sizes, and splits too small for what uses them stopped before any training."""

from __future__ import annotations

import pytest

from direct2event.data.splits import make_splits
from direct2event.data.static import load_digits
from direct2event.snn.calibration import MIN_CALIBRATION_SAMPLES


def test_splits_are_disjoint_and_sized_as_asked() -> None:
    raw = load_digits()
    splits = make_splits(raw, 0.05, 0.1, seed=0, max_test=100)
    n = len(raw.train)
    assert len(splits.calibration) == round(0.05 * n)
    assert len(splits.validation) == round(0.1 * n)
    assert len(splits.train) == n - len(splits.calibration) - len(splits.validation)
    assert len(splits.test) == 100


def test_a_calibration_split_too_small_names_the_parameter_and_a_value_that_works() -> None:
    raw = load_digits()
    with pytest.raises(
        ValueError, match=r"calibration_fraction = 0.001 leaves 1 calibration"
    ) as err:
        make_splits(raw, 0.001, 0.1, seed=0)
    suggested = float(str(err.value).rsplit("at least ", 1)[1].rstrip("."))
    assert len(make_splits(raw, suggested, 0.1, seed=0).calibration) >= MIN_CALIBRATION_SAMPLES


def test_an_empty_validation_split_is_refused() -> None:
    raw = load_digits()
    with pytest.raises(ValueError, match="validation split would be empty"):
        make_splits(raw, 0.05, 0.0001, seed=0)
