"""Class-labelled image folders (ImageNet layout ``root/<class>/<image>``) with the ADM/DiT preprocessing.

Preprocessing (ADM ``center_crop_arr``, reused by DiT's ``train.py``; Dhariwal & Nichol 2021, guided-diffusion
``image_datasets.py``):

1. while the short side is >= 2 x ``image_size``: halve both sides (integer division) with a BOX filter
   (anti-aliased downsampling in octaves);
2. resize with BICUBIC so the short side equals ``image_size`` (each side ``round(side * scale)``);
3. crop ``image_size x image_size`` at offset ``((H - s) // 2, (W - s) // 2)`` (the extra pixel of an odd
   margin goes to the bottom/right).

Then a horizontal flip with probability ``flip_p`` (DiT: 0.5 during training; 0 when precomputing latents,
which handle flips themselves, see :mod:`ablate.data.latents`) and the map ``[0, 255] -> [-1, 1]``
(``x / 127.5 - 1``, i.e. torchvision ``ToTensor`` + ``Normalize(0.5, 0.5)``).
Classes are the sorted sub-directory names, labels their indices (torchvision ``ImageFolder`` convention).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["IMAGE_EXTENSIONS", "ImageFolderDataset", "center_crop_arr"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def center_crop_arr(image: Image.Image, image_size: int) -> np.ndarray:
    """ADM center crop (steps 1-3 of the module docstring); returns a uint8 array ``[s, s, C]``."""
    if image_size <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}")
    while min(image.size) >= 2 * image_size:
        image = image.resize((image.size[0] // 2, image.size[1] // 2), resample=Image.BOX)
    scale = image_size / min(image.size)
    image = image.resize((round(image.size[0] * scale), round(image.size[1] * scale)), resample=Image.BICUBIC)
    arr = np.asarray(image)
    top = (arr.shape[0] - image_size) // 2
    left = (arr.shape[1] - image_size) // 2
    return arr[top: top + image_size, left: left + image_size]


class ImageFolderDataset(Dataset):
    """``root/<class>/<image>`` -> ``(image [C, s, s] float32 in [-1, 1], class index)``.

    Args:
        root: folder with one sub-folder per class.
        image_size: output side ``s``.
        flip_p: probability of a horizontal flip (0.5 = DiT training; 0 = deterministic).
        mode: PIL mode to convert to (``"RGB"`` or ``"L"``).
        generator: optional ``torch.Generator`` for reproducible flips.
    """

    def __init__(self, root: str | os.PathLike, image_size: int, flip_p: float = 0.5, mode: str = "RGB",
                 generator: torch.Generator | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist")
        if not 0.0 <= flip_p <= 1.0:
            raise ValueError(f"flip_p must be a probability in [0, 1], got {flip_p}")
        if mode not in ("RGB", "L"):
            raise ValueError(f"mode must be 'RGB' or 'L', got {mode!r}")
        self.image_size, self.flip_p, self.mode, self.generator = image_size, flip_p, mode, generator
        self.classes = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        if not self.classes:
            raise FileNotFoundError(f"{self.root} has no class sub-folders (expected root/<class>/<image>)")
        self.samples: list[tuple[Path, int]] = []
        for label, cls in enumerate(self.classes):
            for path in sorted((self.root / cls).rglob("*")):
                if path.suffix.lower() in IMAGE_EXTENSIONS:
                    self.samples.append((path, label))
        if not self.samples:
            raise FileNotFoundError(f"no images with extensions {IMAGE_EXTENSIONS} under {self.root}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, i: int) -> Tensor:
        """The cropped, unflipped image ``i`` in [-1, 1]."""
        with Image.open(self.samples[i][0]) as im:
            arr = center_crop_arr(im.convert(self.mode), self.image_size)
        x = torch.from_numpy(np.array(arr, dtype=np.float32)) / 127.5 - 1.0
        return x.unsqueeze(0) if x.ndim == 2 else x.permute(2, 0, 1).contiguous()

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        x = self.load(i)
        if self.flip_p > 0 and float(torch.rand((), generator=self.generator)) < self.flip_p:
            x = x.flip(-1)
        return x, self.samples[i][1]
