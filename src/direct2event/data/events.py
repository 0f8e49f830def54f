"""Event-camera datasets laid out as tonic stores them under ``save_to/<ClassName>/``.

The files are found in tonic's layout and read with tonic's own readers, dtypes and sensor sizes,
then binned as tonic's ``ToFrame`` bins them (:func:`events_to_frames`; after tonic's
``Downsample`` when a smaller sensor is asked for). We never construct tonic's dataset classes
directly: they start a download whenever their file-count check fails, and a run here must never
try a silent download. A missing folder is a clear error that names the expected layout instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from direct2event.data.containers import LabelledArrays, RawData
from direct2event.data.static import DataError, check_labels


def _read_nmnist(path: Path) -> np.ndarray:
    from tonic.datasets import NMNIST
    from tonic.io import read_mnist_file

    return read_mnist_file(str(path), dtype=NMNIST.dtype)


def _read_dvs_gesture(path: Path) -> np.ndarray:
    from numpy.lib import recfunctions
    from tonic.datasets import DVSGesture

    raw = np.load(path).astype(np.float64)
    raw[:, 3] *= 1000  # tonic: ms to us
    return recfunctions.unstructured_to_structured(raw, DVSGesture.dtype)


def _read_cifar10_dvs(path: Path) -> np.ndarray:
    from tonic.io import read_aedat4

    events = read_aedat4(str(path))
    events.dtype.names = ["t", "x", "y", "p"]
    return events


@dataclass(frozen=True)
class TonicLayout:
    """Where tonic keeps one dataset's files and how to read them."""

    class_name: str
    parts: dict[str, str]  # split -> sub-folder ("" when the dataset has no split)
    suffix: str
    reader: Callable[[Path], np.ndarray]
    label: Callable[[Path], int]
    sensor_size: tuple[int, int, int]
    classes: int
    archive_hint: str


def _cifar10_dvs_label(path: Path) -> int:
    from tonic.datasets import CIFAR10DVS

    name = path.parent.name
    if name not in CIFAR10DVS.classes:
        raise DataError(f"{path}: folder '{name}' is not a CIFAR10-DVS class.")
    return int(CIFAR10DVS.classes[name])


TONIC_LAYOUTS: dict[str, TonicLayout] = {
    "nmnist": TonicLayout(
        "NMNIST",
        {"train": "Train", "test": "Test"},
        ".bin",
        _read_nmnist,
        lambda p: int(p.parent.name),
        (34, 34, 2),
        10,
        "train.zip and test.zip extracted to Train/<digit>/*.bin and Test/<digit>/*.bin",
    ),
    "dvs_gesture": TonicLayout(
        "DVSGesture",
        {"train": "ibmGestureTrain", "test": "ibmGestureTest"},
        ".npy",
        _read_dvs_gesture,
        lambda p: int(p.stem),
        (128, 128, 2),
        11,
        "ibmGestureTrain.tar.gz / ibmGestureTest.tar.gz extracted to "
        "ibmGestureTrain/<userNN_lighting>/<label>.npy",
    ),
    "cifar10_dvs": TonicLayout(
        "CIFAR10DVS",
        {"all": ""},
        ".aedat4",
        _read_cifar10_dvs,
        _cifar10_dvs_label,
        (128, 128, 2),
        10,
        "CIFAR10DVS.zip and its per-class zips extracted to <class>/*.aedat4",
    ),
}


def _list_files(root: Path, layout: TonicLayout, part: str) -> list[Path]:
    folder = root / layout.class_name / layout.parts[part]
    files = sorted(folder.rglob(f"*{layout.suffix}")) if folder.is_dir() else []
    if not files:
        raise DataError(
            f"No {layout.suffix} files under {folder}. Place the dataset as tonic stores it: "
            f"{root}/{layout.class_name}/ with {layout.archive_hint}. Nothing is downloaded "
            "automatically."
        )
    return files


def check_events(events: np.ndarray, sensor_size: tuple[int, int, int], source: str) -> None:
    """Every event lies on the sensor (``0 <= x < W``, ``0 <= y < H``), its polarity is one of
    the sensor's ``P`` values and its time stamps are numbers; else a :class:`DataError` naming
    the file, what is wrong and the fix."""
    names = events.dtype.names or ()
    missing = [f for f in ("x", "y", "p", "t") if f not in names]
    if missing:
        raise DataError(f"{source}: events without field(s) {missing} (found {list(names)}).")
    width, height, polarities = sensor_size
    for field, size in (("x", width), ("y", height), ("p", polarities)):
        values = events[field]
        if not np.issubdtype(values.dtype, np.integer) and not np.issubdtype(
            values.dtype, np.bool_
        ):
            raise DataError(
                f"{source}: event field '{field}' has dtype {values.dtype}, not integer."
            )
        bad = (values < 0) | (values >= size)
        if bad.any():
            raise DataError(
                f"{source}: {int(bad.sum())} event(s) with {field} outside 0..{size - 1} (e.g. "
                f"{int(values[bad][0])}); the sensor is {width} x {height} with {polarities} "
                "polarities. The recording is corrupt or from another sensor: check the "
                "dataset key (sensor size) or replace the file."
            )
    if not np.issubdtype(events["t"].dtype, np.number):
        raise DataError(f"{source}: time stamps have dtype {events['t'].dtype}, not numbers.")


def cap_events(frames: np.ndarray, max_per_bin: int | None) -> np.ndarray:
    """Frames with at most ``max_per_bin`` events per pixel, polarity and time bin (``None``:
    unchanged). ``1`` gives binary frames: a refractory filter as long as a bin, which drops the
    repeats of a pixel that the networks' first layer mostly sums anyway; every event dropped is
    an input event E no longer pays for."""
    if max_per_bin is None:
        return frames
    if max_per_bin < 1:
        raise ValueError(f"max_per_bin must be >= 1 (or None: all events), got {max_per_bin}.")
    return np.minimum(frames, np.asarray(max_per_bin, dtype=frames.dtype))


def events_to_frames(
    events: np.ndarray,
    sensor_size: tuple[int, int, int],
    timesteps: int,
    target_size: int | None = None,
    max_per_bin: int | None = None,
) -> np.ndarray:
    """Bin one recording to ``[T, 2, H, W]`` as tonic's ``ToFrame(n_time_bins=T)`` does
    (``Downsample`` first when asked), at most ``max_per_bin`` events per cell
    (:func:`cap_events`).

    Written here rather than called: tonic accumulates each bin with ``np.add.at``, the slowest
    way NumPy adds at indices, and the shift benchmark bins every shifted recording it makes
    (some 40k per run on simulated N-MNIST). One ``np.bincount`` over flat cell indices counts
    the same events into the same cells several times faster; ``tests/data/test_events.py``
    checks it against ``ToFrame`` on recordings with remainders, repeats and a zero window."""
    from tonic.transforms import Downsample

    if target_size is not None and target_size != sensor_size[0]:
        factor = target_size / sensor_size[0]
        events = Downsample(spatial_factor=factor)(events)
        sensor_size = (target_size, round(sensor_size[1] * factor), sensor_size[2])
    width, height, polarities = sensor_size
    out = np.zeros((timesteps, 2, height, width), dtype=np.uint8)
    if len(events) == 0:
        return out
    # tonic's SliceByTimeBins: windows of (t_last - t_first) // T from the first event's time,
    # each event in the window whose [start, end) holds it, the remainder dropped
    times = events["t"]
    window = (times[-1] - times[0]) // timesteps
    starts = np.searchsorted(times, np.arange(timesteps) * window + times[0])
    ends = np.searchsorted(times, np.arange(timesteps) * window + times[0] + window)
    binned = events[starts[0] : ends[-1]]  # the windows abut: one ends where the next starts
    if len(binned) == 0:
        return out
    bins = np.repeat(np.arange(timesteps), ends - starts)
    p = 0 if polarities == 1 else binned["p"].astype(np.int64)
    y, x = binned["y"].astype(np.int64), binned["x"].astype(np.int64)
    cells = ((bins * polarities + p) * height + y) * width + x
    counts = np.bincount(cells, minlength=timesteps * polarities * height * width)
    frames = counts.reshape(timesteps, polarities, height, width)
    out[:] = np.minimum(frames, 255)  # a single polarity fills both channels, as in tonic
    return cap_events(out, max_per_bin)


def read_recordings(
    key: str, root: Path, n: int, seed: int = 0, test_fraction: float = 0.2
) -> tuple[list[np.ndarray], np.ndarray, tuple[int, int, int]]:
    """``n`` test recordings (a seeded sample) as event arrays, their labels and the sensor size:
    the raw events the shift benchmark perturbs before binning. The test part is the one
    :func:`load_tonic` holds out (for datasets without one, its fixed-seed ``test_fraction``)."""
    layout = TONIC_LAYOUTS[key]
    if "test" in layout.parts:
        files = _list_files(Path(root), layout, "test")
    else:
        everything = _list_files(Path(root), layout, "all")
        order = np.random.default_rng(0).permutation(len(everything))
        files = [everything[i] for i in order[: max(1, round(test_fraction * len(everything)))]]
    pick = np.sort(np.random.default_rng(seed).permutation(len(files))[:n])
    events, labels = [], []
    for i in pick:
        rec = layout.reader(files[i])
        check_events(rec, layout.sensor_size, str(files[i]))
        events.append(rec)
        labels.append(layout.label(files[i]))
    return events, np.asarray(labels, dtype=np.int64), layout.sensor_size


def load_tonic(
    key: str,
    root: Path,
    timesteps: int,
    target_size: int | None = None,
    limit: int | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    progress: bool = True,
) -> RawData:
    """Read an event dataset from tonic's layout under ``root`` and bin it into frames.

    ``limit`` caps the number of recordings read per part (quick runs). Datasets without an
    official test part (CIFAR10-DVS) get a fixed-seed ``test_fraction`` held out.
    """
    if key not in TONIC_LAYOUTS:
        raise DataError(f"Unknown event dataset '{key}'; known: {sorted(TONIC_LAYOUTS)}.")
    layout = TONIC_LAYOUTS[key]
    parts: dict[str, LabelledArrays] = {}
    for part in layout.parts:
        files = _list_files(Path(root), layout, part)
        if limit is not None:
            files = list(np.random.default_rng(seed).permutation(files))[:limit]  # type: ignore[arg-type]
        xs, ys = [], []
        for path in tqdm(files, desc=f"binning {key} {part}", disable=not progress):
            try:
                events = layout.reader(path)
            except (OSError, ValueError) as err:
                raise DataError(f"Cannot read event file {path}: {err}") from err
            check_events(events, layout.sensor_size, str(path))
            xs.append(events_to_frames(events, layout.sensor_size, timesteps, target_size))
            ys.append(layout.label(path))
        labels = check_labels(np.asarray(ys, dtype=np.int64), layout.classes, f"{root} ({part})")
        parts[part] = LabelledArrays(np.stack(xs), labels)
    if "all" in parts:
        whole = parts.pop("all")
        order = np.random.default_rng(seed).permutation(len(whole))
        n_test = max(1, round(test_fraction * len(whole)))
        parts["test"] = LabelledArrays(whole.x[order[:n_test]], whole.y[order[:n_test]])
        parts["train"] = LabelledArrays(whole.x[order[n_test:]], whole.y[order[n_test:]])
    return RawData(
        key, "events", layout.classes, parts["train"], parts["test"], info={"root": str(root)}
    )
