from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from kedro.io import DatasetError

from direct2event.glue.datasets import DigitsDataset, EventSource, SimulatedNMNISTDataset


def test_simulated_frames_are_cached_and_reused(tmp_path: Path) -> None:
    ds = SimulatedNMNISTDataset(cache_dir=str(tmp_path), n_train=24, n_val=0, n_test=8)
    source = ds.load()
    assert isinstance(source, EventSource)
    raw = source.frames(4)
    assert raw.simulated and raw.kind == "events" and raw.name == "nmnist_sim"
    assert raw.train.x.shape == (24, 4, 2, 34, 34) and len(raw.test) == 8
    cached = source.cache_path(4)
    assert cached.exists() and cached.parent == tmp_path

    def refuse(_timesteps: int):
        raise AssertionError("simulated again although the cache exists")

    again = EventSource("nmnist_sim", str(tmp_path), source.settings, refuse).frames(4)
    assert np.array_equal(again.train.x, raw.train.x) and again.simulated
    # other settings (here: timesteps) get their own cache file
    assert source.cache_path(8) != cached
    other = SimulatedNMNISTDataset(cache_dir=str(tmp_path), n_train=12, n_val=0, n_test=8).load()
    assert other.cache_path(4) != cached


def test_corrupt_cache_says_how_to_fix(tmp_path: Path) -> None:
    source = SimulatedNMNISTDataset(cache_dir=str(tmp_path), n_train=4, n_val=0, n_test=4).load()
    tmp_path.mkdir(exist_ok=True)
    source.cache_path(4).write_bytes(b"not an npz")
    with pytest.raises(DatasetError, match="delete it to rebuild"):
        source.frames(4)


def test_raw_sources_are_read_only() -> None:
    with pytest.raises(DatasetError, match="read-only"):
        DigitsDataset().save({"x": 1})
