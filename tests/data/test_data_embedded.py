"""Embedded datasets: shapes, exact pixel scaling, stratified split, uint8 helpers, Fashion-MNIST IDX."""

import gzip
import struct

import numpy as np
import pytest
import torch

from ablate.data import DATASETS, build_dataset, dataset_info, from_uint8, stratified_split, to_uint8
from ablate.data.fashion import load_fashion_mnist, read_idx


@pytest.mark.parametrize("name", ["digits", "mnist5k"])
def test_shapes_ranges_labels_and_split(name):
    info = dataset_info(name)
    train, test = build_dataset(name, "train"), build_dataset(name, "test")
    assert (len(train), len(test)) == (info.num_train, info.num_test)
    x, y = train[0]
    assert x.dtype == torch.float32 and tuple(x.shape) == info.shape and isinstance(y, int)
    for ds in (train, test):
        assert ds.images.min() == -1.0 and ds.images.max() == 1.0
        assert set(ds.labels.tolist()) == set(range(info.num_classes))
    # the split is stratified: each class contributes round(0.2 n_c) test images, and it is reproducible
    all_labels = torch.cat([train.labels, test.labels])
    for c in range(info.num_classes):
        n_c = int((all_labels == c).sum())
        assert int((test.labels == c).sum()) == round(0.2 * n_c)
    assert torch.equal(build_dataset(name, "test").images, test.images)


def test_limit_is_a_class_balanced_looking_subset_not_a_prefix():
    sub = build_dataset("mnist5k", "test", limit=200)  # the file is sorted by class: a prefix would be 0s and 1s
    full = build_dataset("mnist5k", "test")
    assert len(sub) == 200 and set(sub.labels.tolist()) == set(range(10))
    assert all(any(torch.equal(img, f) for f in full.images) for img in sub.images[:3])


def test_digits_pixels_are_sklearn_values_scaled_exactly():
    from sklearn.datasets import load_digits

    d = load_digits()
    train_idx, test_idx = stratified_split(d.target)
    assert len(np.intersect1d(train_idx, test_idx)) == 0 and len(train_idx) + len(test_idx) == len(d.target)
    test = build_dataset("digits", "test")
    expected = torch.from_numpy(d.images[test_idx]).float() / 8.0 - 1.0  # 0..16 -> [-1, 1]
    assert torch.equal(test.images[:, 0], expected)
    assert torch.equal(test.labels, torch.from_numpy(d.target[test_idx]))


def test_uint8_round_trip_and_clamping():
    grid = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(to_uint8(from_uint8(grid)), grid)
    x = torch.tensor([-3.0, -1.0, 0.0, 1.0, 2.5])
    assert to_uint8(x).tolist() == [0, 0, 128, 255, 255]  # (0 + 1) * 127.5 = 127.5 rounds half to even -> 128
    with pytest.raises(ValueError, match="NaN"):
        to_uint8(torch.tensor([float("nan")]))


def test_bad_names_raise_with_choices():
    with pytest.raises(ValueError, match="valid choices: digits"):
        build_dataset("cifar10")
    with pytest.raises(ValueError, match="valid choices: train, test"):
        build_dataset("digits", split="val")
    assert set(DATASETS) == {"digits", "mnist5k", "fashion"}


def _write_idx(path, arr: np.ndarray):
    code = 0x08  # unsigned byte
    header = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">i", d) for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_fashion_reads_idx_files_and_errors_clearly_when_absent(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m ablate.data.fashion"):
        load_fashion_mnist("train", root=tmp_path)
    d = tmp_path / "fashion-mnist"
    d.mkdir()
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(5, 28, 28))
    labels = np.array([9, 0, 0, 3, 7])
    _write_idx(d / "t10k-images-idx3-ubyte.gz", imgs)
    _write_idx(d / "t10k-labels-idx1-ubyte.gz", labels)
    assert np.array_equal(read_idx(d / "t10k-images-idx3-ubyte.gz"), imgs)
    ds = build_dataset("fashion", "test", root=tmp_path)
    assert len(ds) == 5 and ds.labels.tolist() == labels.tolist()
    assert torch.equal(ds.images[:, 0], torch.from_numpy(imgs).float() / 127.5 - 1.0)
