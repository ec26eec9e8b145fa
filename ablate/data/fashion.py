"""Fashion-MNIST (70k 28x28 grey images, 10 classes, MIT) from the Debian package ``dataset-fashion-mnist``.

The package is fetched with the ordinary apt client and unpacked without root::

    apt-get download dataset-fashion-mnist        # into a temporary directory
    dpkg-deb -x dataset-fashion-mnist_*.deb DIR   # files under DIR/usr/share/datasets/fashion-mnist/

:func:`prepare_fashion_mnist` does this once into the cache directory (``python -m ablate.data.fashion``).
The four IDX files (LeCun's format: big-endian magic ``0x0801`` for labels / ``0x0803`` for images, then the
dimensions as big-endian int32) are read with numpy; the official 60k train / 10k test split is kept.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["FASHION_FILES", "default_data_dir", "fashion_dir", "load_fashion_mnist", "prepare_fashion_mnist",
           "read_idx"]

DEBIAN_PACKAGE = "dataset-fashion-mnist"
_DEB_SUBDIR = Path("usr/share/datasets/fashion-mnist")
FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
PREPARE_COMMAND = "python -m ablate.data.fashion   (or: make data-fashion)"


def default_data_dir() -> Path:
    """``$ABLATE_DATA_DIR`` if set, else ``~/.cache/ablate/data``."""
    return Path(os.environ.get("ABLATE_DATA_DIR", Path.home() / ".cache" / "ablate" / "data"))


def fashion_dir(root: str | os.PathLike | None = None) -> Path:
    return Path(root if root is not None else default_data_dir()) / "fashion-mnist"


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read a (gzipped) IDX file: magic ``0x00 0x00 dtype ndim``, ndim big-endian int32 sizes, raw bytes."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {data[:4].hex()})")
    ndim = data[3]
    dims = np.frombuffer(data, dtype=">i4", count=ndim, offset=4)
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {tuple(dims)} = {int(np.prod(dims))} bytes, found {arr.size}")
    return arr.reshape(tuple(int(d) for d in dims))


def load_fashion_mnist(split: str, root: str | os.PathLike | None = None) -> tuple[Tensor, Tensor]:
    """Images ``[N, 1, 28, 28]`` in [-1, 1] (``x / 127.5 - 1``) and labels ``[N]`` of the official split."""
    if split not in FASHION_FILES:
        raise ValueError(f"unknown split {split!r}; valid choices: {', '.join(FASHION_FILES)}")
    d = fashion_dir(root)
    img_name, lbl_name = FASHION_FILES[split]
    if not (d / img_name).is_file() or not (d / lbl_name).is_file():
        raise FileNotFoundError(
            f"Fashion-MNIST not found in {d} (looked for {img_name}, {lbl_name}). Unpack the Debian package "
            f"'{DEBIAN_PACKAGE}' there once with: {PREPARE_COMMAND}  [uses apt-get download + dpkg-deb -x, "
            "no root]; or pass root=<dir containing fashion-mnist/>.")
    x = torch.from_numpy(read_idx(d / img_name).copy()).unsqueeze(1).float() / 127.5 - 1.0
    y = torch.from_numpy(read_idx(d / lbl_name).astype(np.int64))
    return x, y


def prepare_fashion_mnist(root: str | os.PathLike | None = None,
                          deb: str | os.PathLike | None = None) -> Path:
    """Unpack ``dataset-fashion-mnist`` into ``fashion_dir(root)``; a no-op when the files are already there.

    Args:
        root: cache directory (default :func:`default_data_dir`).
        deb: an already downloaded ``.deb``; otherwise ``apt-get download`` fetches it into a temp dir.
    """
    out = fashion_dir(root)
    if all((out / f).is_file() for pair in FASHION_FILES.values() for f in pair):
        return out
    for tool in ("dpkg-deb",) + (() if deb else ("apt-get",)):
        if shutil.which(tool) is None:
            raise FileNotFoundError(f"'{tool}' not found: Fashion-MNIST comes from the Debian package "
                                    f"'{DEBIAN_PACKAGE}'; elsewhere place the four IDX .gz files "
                                    f"({', '.join(f for p in FASHION_FILES.values() for f in p)}) in {out}")
    with tempfile.TemporaryDirectory() as tmp:
        if deb is None:
            subprocess.run(["apt-get", "download", DEBIAN_PACKAGE], cwd=tmp, check=True)
            debs = glob.glob(os.path.join(tmp, f"{DEBIAN_PACKAGE}_*.deb"))
            if not debs:
                raise FileNotFoundError(f"apt-get download {DEBIAN_PACKAGE} produced no .deb in {tmp}")
            deb = debs[0]
        unpack = Path(tmp) / "unpacked"
        subprocess.run(["dpkg-deb", "-x", str(deb), str(unpack)], check=True)
        out.mkdir(parents=True, exist_ok=True)
        for pair in FASHION_FILES.values():
            for f in pair:
                shutil.copy2(unpack / _DEB_SUBDIR / f, out / f)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=f"Unpack the Debian package {DEBIAN_PACKAGE} (data cache).")
    p.add_argument("--root", default=None, help="default $ABLATE_DATA_DIR or ~/.cache/ablate/data")
    p.add_argument("--deb", default=None, help="an already downloaded .deb (skips apt-get download)")
    args = p.parse_args(argv)
    print(prepare_fashion_mnist(args.root, args.deb))


if __name__ == "__main__":
    main()
