from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from kedro.io import DatasetError

from direct2event.glue.datasets import (
    DigitsDataset,
    EventSource,
    ReportJSONDataset,
    SimulatedNMNISTDataset,
)


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


def test_report_json_is_replaced_whole_and_a_failed_save_keeps_the_old_file(
    tmp_path: Path,
) -> None:
    """Readers in another run see the old report or the new one, never a torn one (three runs in
    one folder once read an empty shift.json); a save that fails leaves the old one."""
    path = tmp_path / "reports" / "shift.json"
    ds = ReportJSONDataset(filepath=str(path), save_args={"indent": 2})
    ds.save({"rows": [1, 2]})
    assert json.loads(path.read_text()) == {"rows": [1, 2]} and ds.load() == {"rows": [1, 2]}
    with pytest.raises(DatasetError, match="not JSON serializable"):
        ds.save({"rows": object()})
    assert ds.load() == {"rows": [1, 2]}
    assert sorted(p.name for p in path.parent.iterdir()) == ["shift.json"]  # no temporary left
    big = {"rows": list(range(200_000))}
    seen: list[object] = []
    stop = threading.Event()

    def read() -> None:  # another run loading it while this one saves
        while not stop.is_set():
            try:
                seen.append(json.loads(path.read_text())["rows"][:2])
            except ValueError as err:  # kedro-datasets' JSONDataset: hundreds of these
                seen.append(f"torn: {err}")

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(20):
            ds.save(big)
            ds.save({"rows": [1, 2]})
    finally:
        stop.set()
        reader.join()
    assert seen and all(rows == [0, 1] or rows == [1, 2] for rows in seen)
