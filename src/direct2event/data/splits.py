"""Fixed-seed train / calibration / validation / test splits as torch tensors."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from direct2event.data.containers import LabelledArrays, RawData
from direct2event.snn.calibration import MIN_CALIBRATION_SAMPLES
from direct2event.snn.training import Split

SPLIT_NAMES = ("train", "calibration", "validation", "test")


@dataclass
class DataSplits:
    """The four splits plus what the model needs to know about the data."""

    name: str
    kind: str
    classes: int
    input_shape: tuple[int, ...]
    simulated: bool
    train: Split
    calibration: Split
    validation: Split
    test: Split

    def sizes(self) -> dict[str, int]:
        return {name: len(getattr(self, name)) for name in SPLIT_NAMES}


def _to_split(part: LabelledArrays, index: np.ndarray | None = None) -> Split:
    x, y = (part.x, part.y) if index is None else (part.x[index], part.y[index])
    return Split(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.asarray(y)))


def check_split_sizes(
    raw: RawData,
    calibration_fraction: float,
    validation_fraction: float,
    n_cal: int,
    max_validation: int | None,
    max_test: int | None,
) -> None:
    """Stop before any training when a split would be too small for what uses it, naming the
    parameter and a value that works."""
    n = len(raw.train)
    if n_cal < MIN_CALIBRATION_SAMPLES:
        need = MIN_CALIBRATION_SAMPLES / n if n else 1.0
        raise ValueError(
            f"{raw.name}: data.calibration_fraction = {calibration_fraction:g} leaves {n_cal} "
            f"calibration sample(s) of {n} training samples; the surrogate-to-spike calibration "
            f"needs at least {MIN_CALIBRATION_SAMPLES}. Set data.calibration_fraction to at least "
            f"{math.ceil(need * 10_000) / 10_000:g}."
        )
    n_val = len(raw.val) if raw.val is not None else round(validation_fraction * (n - n_cal))
    if max_validation is not None:
        n_val = min(n_val, max_validation)
    if n_val < 1:
        raise ValueError(
            f"{raw.name}: the validation split would be empty (data.validation_fraction = "
            f"{validation_fraction:g}, data.max_validation = {max_validation}); the sweep and "
            "the fine-tuning measure on it. Raise them."
        )
    if len(raw.test) == 0 or max_test == 0:
        raise ValueError(
            f"{raw.name}: the test split is empty (data.max_test = {max_test}); E and D are "
            "evaluated on it. Check the data files or raise data.max_test."
        )


def make_splits(
    raw: RawData,
    calibration_fraction: float,
    validation_fraction: float,
    seed: int,
    max_train: int | None = None,
    max_validation: int | None = None,
    max_test: int | None = None,
) -> DataSplits:
    """Split ``raw`` with a fixed seed; the calibration split always comes out of train.

    The validation split is the source's own validation part when it has one, else a
    ``validation_fraction`` of train. Test is the source's test part, never used to fit anything.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(raw.train))
    n_cal = max(1, round(calibration_fraction * len(order)))
    check_split_sizes(
        raw, calibration_fraction, validation_fraction, n_cal, max_validation, max_test
    )
    cal_idx, rest = order[:n_cal], order[n_cal:]
    if raw.val is not None:
        val_part, val_idx = raw.val, rng.permutation(len(raw.val))
    else:
        n_val = max(1, round(validation_fraction * len(order)))
        val_part, val_idx, rest = raw.train, rest[:n_val], rest[n_val:]
    if max_validation is not None:
        val_idx = val_idx[:max_validation]
    train_idx = rest[:max_train] if max_train is not None else rest
    test_idx = np.arange(len(raw.test))
    if max_test is not None:
        test_idx = rng.permutation(len(raw.test))[:max_test]
    if len(train_idx) == 0:
        raise ValueError(f"{raw.name}: nothing left to train on after the calibration split.")
    shape = tuple(int(s) for s in raw.train.x.shape[1:])
    input_shape = shape[1:] if raw.kind == "events" else shape
    return DataSplits(
        name=raw.name,
        kind=raw.kind,
        classes=raw.classes,
        input_shape=input_shape,
        simulated=raw.simulated,
        train=_to_split(raw.train, np.sort(train_idx)),
        calibration=_to_split(raw.train, np.sort(cal_idx)),
        validation=_to_split(val_part, np.sort(val_idx)),
        test=_to_split(raw.test, np.sort(test_idx)),
    )
