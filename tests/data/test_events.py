from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from direct2event.data.events import cap_events, events_to_frames, load_tonic
from direct2event.data.static import DataError


def write_nmnist_bin(path: Path, x, y, t, p) -> None:
    """N-MNIST's on-disk format: 40-bit events, x, y, polarity bit + 23-bit timestamp (us)."""
    t = np.asarray(t, dtype=np.uint32)
    raw = np.zeros((len(t), 5), dtype=np.uint8)
    raw[:, 0], raw[:, 1] = x, y
    raw[:, 2] = (np.asarray(p, dtype=np.uint32) << 7) | ((t >> 16) & 0x7F)
    raw[:, 3], raw[:, 4] = (t >> 8) & 0xFF, t & 0xFF
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw.tobytes())


def test_nmnist_files_in_tonic_layout_are_binned(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    for part in ("Train", "Test"):
        for digit in (3, 7):
            # 4 events: two early at (1, 2) ON, one late at (5, 6) OFF, one at the end
            write_nmnist_bin(
                root / "NMNIST" / part / str(digit) / f"{digit:05d}.bin",
                x=[1, 1, 5, 9],
                y=[2, 2, 6, 9],
                t=[0, 100, 250_000, 300_000],
                p=[1, 1, 0, 1],
            )
    raw = load_tonic("nmnist", root, timesteps=3, progress=False)
    assert raw.train.x.shape == (2, 3, 2, 34, 34) and raw.train.x.dtype == np.uint8
    assert sorted(raw.train.y.tolist()) == [3, 7] and raw.classes == 10
    frames = raw.test.x[0]
    # window = 300000 // 3 = 100000 us: t = 0 -> bin 0, 100 -> 0, 250000 -> 2, 300000 dropped
    assert frames[0, 1, 2, 1] == 2  # [time, polarity, y, x]
    assert frames[2, 0, 6, 5] == 1
    assert frames.sum() == 3


def test_dvs_gesture_npy_with_downsampling(tmp_path: Path) -> None:
    folder = tmp_path / "DVSGesture"
    for part in ("ibmGestureTrain", "ibmGestureTest"):
        for label in (0, 4):
            # columns x, y, p, t (ms), as tonic's preprocessed DVSGesture files
            events = np.array([[0, 0, 1, 0], [127, 127, 0, 10], [64, 64, 1, 20]], dtype=np.float64)
            path = folder / part / "user01_fluorescent" / f"{label}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, events)
    raw = load_tonic("dvs_gesture", tmp_path, timesteps=2, target_size=32, progress=False)
    assert raw.train.x.shape == (2, 2, 2, 32, 32)
    assert sorted(raw.test.y.tolist()) == [0, 4]
    # window 20000 // 2 = 10000 us: t = 0 -> bin 0, 10 ms -> bin 1, 20 ms dropped
    f = raw.train.x[0]
    assert f[0, 1, 0, 0] == 1 and f[1, 0, 31, 31] == 1 and f.sum() == 2


@pytest.mark.parametrize(
    ("key", "folder"),
    [("nmnist", "NMNIST"), ("dvs_gesture", "DVSGesture"), ("cifar10_dvs", "CIFAR10DVS")],
)
def test_missing_event_data_names_layout_and_never_downloads(
    tmp_path: Path, key: str, folder: str
) -> None:
    with pytest.raises(DataError, match=f"{folder}.*Nothing is downloaded"):
        load_tonic(key, tmp_path, timesteps=4, progress=False)
    assert not (tmp_path / folder).exists() or not any((tmp_path / folder).rglob("*.zip"))


def test_unknown_event_dataset() -> None:
    with pytest.raises(DataError, match="Unknown event dataset"):
        load_tonic("ncaltech", Path("."), 4)


def test_a_cap_keeps_at_most_that_many_events_per_cell() -> None:
    # 3 ON events at (1, 2), 1 OFF event at (0, 0), all in the first of 2 bins, 1 ON event later
    events = np.zeros(5, dtype=[("x", int), ("y", int), ("t", int), ("p", int)])
    events["x"], events["y"] = [1, 1, 1, 0, 3], [2, 2, 2, 0, 3]
    events["t"], events["p"] = [0, 1, 2, 3, 100], [1, 1, 1, 0, 1]
    full = events_to_frames(events, (4, 4, 2), 2)
    assert full[0, 1, 2, 1] == 3 and full[0, 0, 0, 0] == 1
    binary = events_to_frames(events, (4, 4, 2), 2, max_per_bin=1)
    assert binary[0, 1, 2, 1] == 1 and binary[0, 0, 0, 0] == 1 and binary.dtype == np.uint8
    assert binary.sum() == full.sum() - 2  # two repeats of one cell dropped, nothing else
    assert np.array_equal(cap_events(full, 2), np.minimum(full, 2))
    assert cap_events(full, None) is full
    with pytest.raises(ValueError, match="max_per_bin must be >= 1"):
        cap_events(full, 0)


def test_empty_recording_gives_empty_frames() -> None:
    empty = np.zeros(0, dtype=[("x", int), ("y", int), ("t", int), ("p", int)])
    assert events_to_frames(empty, (34, 34, 2), 4).sum() == 0


def test_cifar10_dvs_aedat4_files_in_tonic_layout(tmp_path: Path) -> None:
    import dv_processing as dv  # dev extra: writes real AEDAT4 files

    for cls in ("airplane", "dog"):
        for i in range(2):
            store = dv.EventStore()
            # t in us, x, y, polarity: 10 ms apart
            for t, x, y, p in [(0, 0, 0, True), (10_000, 127, 127, False), (20_000, 64, 64, True)]:
                store.push_back(1_000_000 + t, x, y, p)
            folder = tmp_path / "CIFAR10DVS" / cls
            folder.mkdir(parents=True, exist_ok=True)
            config = dv.io.MonoCameraWriter.EventOnlyConfig("DVS128", (128, 128))
            writer = dv.io.MonoCameraWriter(str(folder / f"cifar10_{cls}_{i}.aedat4"), config)
            writer.writeEvents(store)
            del writer  # closes the file
    raw = load_tonic("cifar10_dvs", tmp_path, timesteps=2, target_size=32, progress=False)
    assert len(raw.train) + len(raw.test) == 4 and len(raw.test) == 1
    assert sorted([*raw.train.y.tolist(), *raw.test.y.tolist()]) == [0, 0, 5, 5]
    frames = raw.train.x[0]
    assert frames.shape == (2, 2, 32, 32)
    # window 20000 // 2 us: bin 0 holds t = 0 (ON at 0, 0), bin 1 the OFF event at (31, 31)
    assert frames[0, 1, 0, 0] == 1 and frames[1, 0, 31, 31] == 1 and frames.sum() == 2


def test_events_off_the_sensor_name_the_file_field_and_sensor(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    for part in ("Train", "Test"):
        write_nmnist_bin(
            root / "NMNIST" / part / "3" / "00003.bin", x=[1, 40], y=[2, 2], t=[0, 10], p=[1, 1]
        )
    with pytest.raises(DataError) as err:
        load_tonic("nmnist", root, timesteps=2, progress=False)
    message = str(err.value)
    assert "00003.bin: 1 event(s) with x outside 0..33 (e.g. 40)" in message
    assert "the sensor is 34 x 34 with 2 polarities" in message


def _tonic_frames(events: np.ndarray, sensor_size: tuple[int, int, int], t: int) -> np.ndarray:
    """What the project bins as, by tonic itself: ``ToFrame`` clipped into 2 uint8 channels."""
    from tonic.transforms import ToFrame

    out = np.zeros((t, 2, sensor_size[1], sensor_size[0]), dtype=np.uint8)
    if len(events):
        frames = ToFrame(sensor_size=sensor_size, n_time_bins=t)(events.copy())
        out[: len(frames)] = np.clip(frames, 0, 255)
    return out


@pytest.mark.parametrize("case", ["random", "repeats", "one_time", "short", "one_polarity"])
def test_binning_equals_tonic_to_frame(case: str) -> None:
    """The vectorised binning counts every event into the cell tonic's ``ToFrame`` does: random
    recordings whose duration leaves a remainder (dropped), 300 repeats of a few cells (clipped
    at 255), all events at one time (a zero window: empty frames), fewer microseconds than bins,
    and a single-polarity sensor."""
    rng = np.random.default_rng(0)
    dtype = [("x", np.int16), ("y", np.int16), ("t", np.int64), ("p", np.int8)]
    size, n = ((34, 34, 2), 5000) if case != "one_polarity" else ((34, 34, 1), 3000)
    events = np.zeros(n, dtype=dtype)
    events["x"], events["y"] = rng.integers(0, 34, n), rng.integers(0, 34, n)
    events["p"] = rng.integers(0, size[2], n)
    events["t"] = np.sort(rng.integers(0, 300_001, n))
    if case == "repeats":
        events["x"], events["y"] = rng.integers(0, 2, n), 3
    elif case == "one_time":
        events["t"] = 1234
    elif case == "short":
        events["t"] = np.sort(rng.integers(100, 106, n))
    for t in (1, 4, 7):
        ours = events_to_frames(events, size, t)
        assert ours.dtype == np.uint8 and np.array_equal(ours, _tonic_frames(events, size, t))
    if case == "random":
        assert 0 < events_to_frames(events, size, 7).sum() <= n  # the remainder is dropped
