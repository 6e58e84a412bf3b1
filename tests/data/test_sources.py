"""Sources: fixtures written here in the real formats, read back through prepare and shards."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from PIL import Image

from deepfleet.config import DataSection
from deepfleet.data import load_source, prepare_from_config, read_manifest, read_split
from deepfleet.data._idx import FASHION_CLASSES, read_idx
from deepfleet.errors import UserError


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    """LeCun's IDX: two zero bytes, the type byte (0x08 = ubyte), ndim, big-endian dims."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


def make_mnist(folder: Path, n_train=40, n_test=12, gz=True, seed=0):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    xs = rng.integers(0, 256, (n_train + n_test, 28, 28), dtype=np.uint8)
    ys = np.arange(n_train + n_test) % 10
    suffix = ".gz" if gz else ""
    write_idx(folder / f"train-images-idx3-ubyte{suffix}", xs[:n_train], gz)
    write_idx(folder / f"train-labels-idx1-ubyte{suffix}", ys[:n_train], gz)
    write_idx(folder / f"t10k-images-idx3-ubyte{suffix}", xs[n_train:], gz)
    write_idx(folder / f"t10k-labels-idx1-ubyte{suffix}", ys[n_train:], gz)
    return xs, ys


def scaled(pixels: np.ndarray) -> np.ndarray:
    """Model input of uint8 pixels, by the manifest's rule: float32(x) * float32(1/255)."""
    return pixels.astype(np.float32) * np.float32(1 / 255)


def prepared(tmp_path: Path, source: str, **data) -> Path:
    out = tmp_path / "prepared"
    prepare_from_config(DataSection(source=source, shards=2, **data), out, seed=0)
    return out


def read_all(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Every split concatenated, ordered by id, plus each split's ids."""
    splits = {s: read_split(folder, s) for s in read_manifest(folder).splits}
    ids = np.concatenate([s.ids.numpy() for s in splits.values()])
    order = np.argsort(ids)
    x = np.concatenate([s.x.numpy() for s in splits.values()])[order]
    y = np.concatenate([s.y.numpy() for s in splits.values()])[order]
    return ids[order], x, y, {k: v.ids.numpy() for k, v in splits.items()}


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx_round_trip_keeps_its_own_test_set(tmp_path, gz):
    xs, ys = make_mnist(tmp_path / "mnist", gz=gz)
    out = prepared(tmp_path, str(tmp_path / "mnist"), val_fraction=0.25)
    ids, x, y, split_ids = read_all(out)
    assert np.array_equal(ids, np.arange(52))
    assert np.array_equal(x, scaled(xs[:, None]))
    assert np.array_equal(y, ys)
    assert sorted(split_ids["test"]) == list(range(40, 52))  # t10k is the test split
    assert len(split_ids["val"]) == 10 and len(split_ids["train"]) == 30


def test_fashion_mnist_names_and_bad_idx(tmp_path):
    make_mnist(tmp_path / "f", n_train=10, n_test=10)
    make_mnist(tmp_path / "FashionMNIST" / "raw", n_train=10, n_test=10)
    assert load_source(f"fashion-mnist:{tmp_path / 'f'}").class_names == FASHION_CLASSES
    assert load_source(str(tmp_path / "f")).class_names == [str(i) for i in range(10)]
    assert load_source(str(tmp_path / "FashionMNIST/raw")).class_names == FASHION_CLASSES
    broken = tmp_path / "broken.idx"
    broken.write_bytes(struct.pack(">BBBBIII", 0, 0, 8, 3, 5, 28, 28) + b"\0" * 100)
    with pytest.raises(UserError, match="promises 3920 bytes"):
        read_idx(broken)


def cifar_record_bytes(labels: np.ndarray, images: np.ndarray) -> bytes:
    """The binary version: per row one label byte, then 1024 red, 1024 green, 1024 blue."""
    return b"".join(
        bytes([int(lab)]) + img.tobytes() for lab, img in zip(labels, images, strict=True)
    )


def make_cifar(folder: Path, per_batch=6, batches=2, seed=0):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, ((batches + 1) * per_batch, 3, 32, 32), dtype=np.uint8)
    labels = np.arange(len(images)) % 3
    for b in range(batches):
        part = slice(b * per_batch, (b + 1) * per_batch)
        (folder / f"data_batch_{b + 1}.bin").write_bytes(
            cifar_record_bytes(labels[part], images[part])
        )
    (folder / "test_batch.bin").write_bytes(
        cifar_record_bytes(labels[-per_batch:], images[-per_batch:])
    )
    (folder / "batches.meta.txt").write_text("cat\ndog\nfrog\n\n")
    return images, labels


def test_cifar10_binary_folder_and_archive(tmp_path):
    images, labels = make_cifar(tmp_path / "cifar-10-batches-bin")
    out = prepared(tmp_path, str(tmp_path), val_fraction=0)  # the parent folder is found too
    ids, x, y, split_ids = read_all(out)
    assert np.array_equal(x, scaled(images))
    assert np.array_equal(y, labels)
    assert sorted(split_ids["test"]) == list(range(12, 18))
    archive = tmp_path / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "cifar-10-batches-bin", arcname="cifar-10-batches-bin")
    from_tar = load_source(str(archive))
    assert from_tar.class_names == ["cat", "dog", "frog"]
    assert np.array_equal(from_tar.x, images) and np.array_equal(
        from_tar.test_rows, np.arange(12, 18)
    )


class _Payload:
    """Unpickling this would create a file: proof that the python version is never loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_cifar10_python_version_is_refused_without_unpickling(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "unpickled"
    for name in ("data_batch_1", "test_batch", "batches.meta"):
        (folder / name).write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(UserError, match="python version.*binary version"):
        load_source(str(folder))
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    with pytest.raises(UserError, match="does not unpickle"):
        load_source(str(archive))
    assert not marker.exists()


def test_image_folder_png_and_jpeg(tmp_path):
    rng = np.random.default_rng(1)
    grey = {}
    for cls in ("cats", "dogs"):
        (tmp_path / "grey" / cls).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 256, (5, 7), dtype=np.uint8)
            Image.fromarray(pixels, "L").save(tmp_path / "grey" / cls / f"{i}.png")
            grey[(cls, i)] = pixels
    samples = load_source(str(tmp_path / "grey"))
    assert samples.class_names == ["cats", "dogs"] and samples.x.shape == (6, 1, 5, 7)
    assert np.array_equal(samples.x[4, 0], grey[("dogs", 1)])  # PNG is lossless
    # an RGB JPEG among grey PNGs turns the set into RGB; sizes must match unless resized
    colour = np.zeros((10, 14, 3), np.uint8)
    colour[..., 0] = 200
    Image.fromarray(colour, "RGB").save(tmp_path / "grey" / "dogs" / "red.JPEG", quality=95)
    with pytest.raises(UserError, match="set data.image_size"):
        load_source(str(tmp_path / "grey"))
    out = prepared(
        tmp_path, str(tmp_path / "grey"), val_fraction=0, test_fraction=0, image_size=[5, 7]
    )
    _, x, y, _ = read_all(out)
    assert x.shape == (7, 3, 5, 7)
    red = x[list(y).index(1) + 3]  # dogs: 0.png, 1.png, 2.png, red.JPEG
    assert abs(red[0].mean() * 255 - 200) < 3 and red[1].mean() * 255 < 3
    assert np.array_equal(x[0, 0], x[0, 1])  # grey repeated over the 3 channels


def test_npz_and_npy(tmp_path):
    x = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    y = np.array(["b", "a"] * 10)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    samples = load_source(str(tmp_path / "d.npz"))
    assert samples.class_names == ["a", "b"] and samples.scale == 1.0
    assert np.array_equal(samples.y, (y == "b").astype(int)) and np.array_equal(samples.x, x)
    (tmp_path / "arrays").mkdir()
    np.save(tmp_path / "arrays" / "x.npy", (x * 10).astype(np.uint8))
    np.save(tmp_path / "arrays" / "y.npy", np.arange(20) % 4)
    out = prepared(tmp_path, str(tmp_path / "arrays"), val_fraction=0, test_fraction=0.2)
    _, xs, ys, _ = read_all(out)
    assert np.array_equal(xs, scaled((x * 10).astype(np.uint8)))
    assert np.array_equal(ys, np.arange(20) % 4)


def test_npz_refuses_pickles_and_names_missing_arrays(tmp_path):
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}] * 4, dtype=object), y=np.zeros(4))
    with pytest.raises(UserError, match="without unpickling"):
        load_source(str(tmp_path / "obj.npz"))
    np.savez(tmp_path / "nolabels.npz", x=np.zeros((4, 2)))
    with pytest.raises(UserError, match="needs arrays x and y, has x"):
        load_source(str(tmp_path / "nolabels.npz"))


def test_csv_and_parquet_tables(tmp_path):
    rng = np.random.default_rng(3)
    features = {f"f{i}": rng.normal(size=30) for i in range(4)}
    species = np.array(["setosa", "versicolor", "virginica"])[np.arange(30) % 3]
    pacsv.write_csv(pa.table({**features, "species": species}), tmp_path / "iris.csv")
    out = prepared(
        tmp_path,
        str(tmp_path / "iris.csv"),
        label_column="species",
        val_fraction=0,
        test_fraction=0.2,
    )
    _, x, y, _ = read_all(out)
    expected = np.stack([features[f"f{i}"] for i in range(4)], axis=1).astype(np.float32)
    assert np.allclose(x, expected, atol=1e-6) and np.array_equal(y, np.arange(30) % 3)
    ids = np.arange(100, 130)
    pq.write_table(
        pa.table({"id": ids, **features, "label": np.arange(30) % 2}), tmp_path / "t.parquet"
    )
    samples = load_source(str(tmp_path / "t.parquet"))
    assert np.array_equal(samples.ids, ids) and samples.x.shape == (30, 4)
    with pytest.raises(UserError, match="no label column 'label'"):
        load_source(str(tmp_path / "iris.csv"))
    bad = io.BytesIO()
    pacsv.write_csv(pa.table({"a": ["x", "y"], "label": [0, 1]}), bad)
    (tmp_path / "text.csv").write_bytes(bad.getvalue())
    with pytest.raises(UserError, match="feature column 'a' is string, not numeric"):
        load_source(str(tmp_path / "text.csv"))


def test_unknown_source_is_one_line(tmp_path):
    with pytest.raises(UserError, match="neither a built-in source"):
        load_source(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no data recognised"):
        load_source(str(tmp_path / "empty"))
