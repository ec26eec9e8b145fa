"""The ``data`` config group's targets: what a run trains on, what FID compares with, how samples become images.

One class per kind of data, each owning its own paths and checks, so that nothing downstream branches on a
dataset's name:

- :class:`EmbeddedData`: the offline datasets that ship with the installed packages (``digits``, ``mnist5k``,
  ``fashion``); FID against the named split with the dataset's own feature extractor.
- :class:`ImageFolderData`: an ADM-style class-folder tree; FID against the same folder (statistics cached by
  its path).
- :class:`LatentData`: VAE latents precomputed once (:func:`ablate.data.encode_latents`); samples are decoded
  with the VAE, and FID compares them with an image folder (``reference_root``).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["DataSpec", "EmbeddedData", "ImageFolderData", "LatentData"]


def _path_key(kind: str, path) -> str:
    return f"{kind}-{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"


class DataSpec:
    """Base class. ``name``, ``image_size`` (H = W of what the network sees), ``channels``, ``num_classes``
    (0 = unconditional), ``tiny_preset`` (the model preset ``model=tiny`` picks for this data)."""

    def __init__(self, name: str, image_size: int, channels: int, num_classes: int, tiny_preset: str | None = None):
        self.name, self.image_size, self.channels = str(name), int(image_size), int(channels)
        self.num_classes, self.tiny_preset = int(num_classes), tiny_preset
        if self.num_classes < 0:
            raise ValueError(f"data.num_classes must be >= 0, got {num_classes}")

    def train_set(self):
        raise NotImplementedError

    def reference(self, split: str) -> tuple[Any, str | None]:
        """What FID compares against: ``(reference, cache name)`` for :func:`ablate.metrics.compute_metrics`."""
        raise NotImplementedError

    decodes = False  # whether samples need decoding (latents) before they are images

    def check_protocol(self, protocol: str) -> None:
        """Refuse an evaluation protocol this data cannot be scored with (a ValueError naming what is missing)."""

    def decode(self, images: Tensor, device) -> Tensor:
        """Generated samples -> images in [-1, 1] (identity but for latents)."""
        return images

    def subset(self, n: int, seed: int) -> tuple[Tensor, Tensor]:
        """A fixed random subset of ``n`` training items (never the reference images): ``(x [n, ...], y [n])``.
        Drawn with its own seed, so it is the same for every run and independent of the data's order (ImageNet
        latents are stored class by class: a prefix would hold one class)."""
        ds = self.train_set()
        n = min(int(n), len(ds))
        idx = np.sort(np.random.default_rng(int(seed)).permutation(len(ds))[:n])
        items = [ds[int(i)] for i in idx]
        return torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items])

    def describe(self) -> dict:
        """The data's identity in the training key and the results row."""
        return {"name": self.name, "image_size": self.image_size, "channels": self.channels,
                "num_classes": self.num_classes}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"


class EmbeddedData(DataSpec):
    """An embedded dataset by name (:data:`ablate.data.DATASETS`); ``root``: only for ``fashion``, the folder
    of the unpacked Debian package (default ``$ABLATE_DATA_DIR`` or ``~/.cache/ablate/data``)."""

    def __init__(self, name: str, image_size: int, channels: int, num_classes: int, tiny_preset: str | None = None,
                 root: str | None = None):
        from .embedded import dataset_info

        info = dataset_info(name)  # refuses an unknown name with the valid ones
        super().__init__(name, image_size, channels, num_classes, tiny_preset)
        if (self.channels, self.image_size, self.image_size) != tuple(info.shape):
            raise ValueError(f"data={name}: image_size/channels {self.image_size}/{self.channels} do not match the "
                             f"dataset's shape {tuple(info.shape)}")
        self.root = root

    def train_set(self):
        from .embedded import build_dataset

        return build_dataset(self.name, "train", **({"root": self.root} if self.root else {}))

    def reference(self, split: str):
        return f"{self.name}/{split}", None


class ImageFolderData(DataSpec):
    """``root/<class>/<image>``, ADM center crop to ``image_size``, random flips in training."""

    def __init__(self, root: str, image_size: int = 256, channels: int = 3, num_classes: int = 1000,
                 tiny_preset: str | None = None, name: str = "image_folder"):
        super().__init__(name, image_size, channels, num_classes, tiny_preset)
        self.root = str(root)

    def train_set(self):
        from .image_folder import ImageFolderDataset

        return ImageFolderDataset(self.root, self.image_size, flip_p=0.5)

    def reference(self, split: str):
        from .image_folder import ImageFolderDataset

        return ImageFolderDataset(self.root, self.image_size, flip_p=0.0), _path_key(self.name, self.root)

    def subset(self, n: int, seed: int):
        from .image_folder import ImageFolderDataset

        ds = ImageFolderDataset(self.root, self.image_size, flip_p=0.0)  # no random flips in the subset
        n = min(int(n), len(ds))
        idx = np.sort(np.random.default_rng(int(seed)).permutation(len(ds))[:n])
        items = [ds[int(i)] for i in idx]
        return torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items])

    def describe(self) -> dict:
        return {**super().describe(), "root": self.root}


class LatentData(DataSpec):
    """VAE latents (``root``: the file :func:`ablate.data.encode_latents` wrote), decoded with ``vae`` (a local
    diffusers AutoencoderKL folder or an HF-cache id/alias: ``ema``, ``mse``). Under the torch-fidelity protocol FID
    compares the decoded samples with the image folder ``reference_root`` at 8x the latent size; under the ADM
    protocol (``eval=paper``) with the reference batch ``eval.reference``, and ``reference_root`` is not needed."""

    decodes = True

    def __init__(self, root: str, reference_root: str | None = None, vae: str = "ema", image_size: int = 32,
                 channels: int = 4, num_classes: int = 1000, tiny_preset: str | None = None, name: str = "latents"):
        super().__init__(name, image_size, channels, num_classes, tiny_preset)
        self.root, self.vae = str(root), str(vae)
        self.reference_root = None if reference_root is None else str(reference_root)
        self._vae = None

    def check_protocol(self, protocol: str) -> None:
        if protocol != "adm" and self.reference_root is None:
            raise ValueError("data=latents scored with torch-fidelity needs data.reference_root=<image folder> "
                             "(or eval=paper: the ADM protocol and its reference batch, eval.reference)")

    def train_set(self):
        from .latents import LatentDataset

        return LatentDataset(self.root, flip=True)

    def subset(self, n: int, seed: int):
        from .latents import LatentDataset

        ds = LatentDataset(self.root, flip=False)  # the unflipped view: a fixed subset
        n = min(int(n), len(ds))
        idx = np.sort(np.random.default_rng(int(seed)).permutation(len(ds))[:n])
        return ds.latents[torch.from_numpy(idx), 0], ds.labels[torch.from_numpy(idx)].long()

    def reference(self, split: str):
        from .image_folder import ImageFolderDataset

        self.check_protocol("torch-fidelity")
        return (ImageFolderDataset(self.reference_root, 8 * self.image_size, flip_p=0.0),
                _path_key(self.name, self.reference_root))

    def decode(self, images: Tensor, device) -> Tensor:
        from .latents import decode_latents, load_vae

        if self._vae is None:
            self._vae = load_vae(self.vae, device=device)
        with torch.no_grad():
            return torch.cat([decode_latents(self._vae, images[i: i + 32].to(device)).cpu()
                              for i in range(0, len(images), 32)])

    def describe(self) -> dict:
        return {**super().describe(), "root": self.root}
