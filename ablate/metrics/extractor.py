"""Small CNN feature extractors for the embedded datasets, registered with torch-fidelity.

Why not Inception on 8x8 digits: Inception resizes everything to 299x299 and its 2048-d pool features make
FID biased upward below a few thousand samples per side (64 vs 64 samples of the same data read ~110). A
classifier trained on the dataset itself, with a **64-d** embedding, gives an FID that is small for real vs
real held-out data at a few hundred samples and grows with any visible corruption (the idea of the
"FID with a domain classifier" used for MNIST-scale GAN studies; the distance itself is unchanged).

Architecture (``SmallCNN``): three 3x3 conv + GELU layers (width w, 2w, 4w) with 2x2 max-pools that bring the
image to <= 7x7, global average pool, ``Linear(4w, 64)`` = the **feature** ``h`` (the FID/KID/PRC layer, taken
before the nonlinearity so it is closer to Gaussian), then ``GELU -> Linear(64, classes)`` = ``logits``
(IS layer). ``logits_unbiased`` is ``W GELU(h)`` without the bias, mirroring Inception's feature of that name.
Inputs are uint8 ``[B, C, H, W]`` (torch-fidelity's contract) mapped to ``x / 127.5 - 1``. The feature is
multiplied by a fixed ``feature_scale`` stored with the weights (``1 / sqrt(mean_d Var h_d)`` on the training
split) so that it is O(1) per dimension, the scale KID's cubic kernel expects.

Weights are trained by ``scripts/train_extractor.py`` (fixed seed) and committed as
``ablate/metrics/assets/ablate-<dataset>.pt``; :func:`register_extractors` registers every asset present
under the name ``ablate-<dataset>`` so that
``torch_fidelity.calculate_metrics(..., feature_extractor="ablate-digits")`` works offline.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.helpers import vassert
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

__all__ = ["ASSETS_DIR", "EXTRACTOR_FOR_DATASET", "FEATURE_DIM", "FeatureExtractorAblate", "SmallCNN",
           "extractor_checksum", "extractor_path", "load_extractor", "register_extractors"]

ASSETS_DIR = Path(__file__).parent / "assets"
FEATURE_DIM = 64
FEATURE_NAME = str(FEATURE_DIM)
EXTRACTOR_FOR_DATASET = {"digits": "ablate-digits", "mnist5k": "ablate-mnist5k", "fashion": "ablate-fashion"}


class SmallCNN(nn.Module):
    """Classifier whose penultimate 64-d activation is the FID feature (see module docstring)."""

    def __init__(self, in_channels: int = 1, size: int = 8, num_classes: int = 10, width: int = 32,
                 feature_dim: int = FEATURE_DIM):
        super().__init__()
        self.config = dict(in_channels=in_channels, size=size, num_classes=num_classes, width=width,
                           feature_dim=feature_dim)
        pool_first = size > 8  # 28 -> 14 -> 7; 8 -> 8 -> 4
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.GELU(),
            nn.MaxPool2d(2) if pool_first else nn.Identity(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 4 * width, 3, padding=1), nn.GELU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.embed = nn.Linear(4 * width, feature_dim)
        self.head = nn.Linear(feature_dim, num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x`` float in [-1, 1] ``[B, C, H, W]`` -> ``(features [B, 64], logits [B, classes])``."""
        h = self.embed(self.body(x))
        return h, self.head(F.gelu(h))


def extractor_path(name: str) -> Path:
    return ASSETS_DIR / f"{name}.pt"


@lru_cache(maxsize=None)
def _load_asset(path: str) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def load_extractor(name_or_path: str | Path) -> tuple[SmallCNN, dict]:
    """Build the trained ``SmallCNN`` from a committed asset name (``ablate-digits``) or a file path."""
    path = Path(name_or_path)
    if not path.is_file():
        path = extractor_path(str(name_or_path))
    if not path.is_file():
        available = sorted(p.stem for p in ASSETS_DIR.glob("ablate-*.pt"))
        raise FileNotFoundError(f"no extractor weights {name_or_path!r} (looked for {path}); committed: "
                                f"{available}; train one with `python scripts/train_extractor.py DATASET`")
    asset = _load_asset(str(path))
    net = SmallCNN(**asset["config"])
    net.load_state_dict(asset["state_dict"])
    return net.eval().requires_grad_(False), asset.get("meta", {})


def extractor_checksum(name: str) -> str:
    """First 8 hex digits of the asset's sha256: part of every real-statistics cache key."""
    return hashlib.sha256(extractor_path(name).read_bytes()).hexdigest()[:8]


class FeatureExtractorAblate(FeatureExtractorBase):
    """torch-fidelity wrapper of :class:`SmallCNN`: features ``"64"``, ``"logits"``, ``"logits_unbiased"``."""

    def __init__(self, name: str, features_list, feature_extractor_weights_path: str | None = None, **kwargs):
        super().__init__(name, features_list)
        self.net, self.meta = load_extractor(feature_extractor_weights_path or name)
        self.in_channels, self.size = self.net.config["in_channels"], self.net.config["size"]
        self.feature_scale = float(self.meta.get("feature_scale", 1.0))

    @staticmethod
    def get_provided_features_list():
        return (FEATURE_NAME, "logits", "logits_unbiased")

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits", "fid": FEATURE_NAME, "kid": FEATURE_NAME, "prc": FEATURE_NAME}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 1, 8, 8, dtype=torch.uint8)

    def forward(self, x: Tensor):
        vassert(torch.is_tensor(x) and x.dtype == torch.uint8, "Expecting a uint8 image tensor")
        expect = (self.in_channels, self.size, self.size)
        vassert(x.dim() == 4 and tuple(x.shape[1:]) == expect,
                f"extractor {self.name!r} was trained on {expect} images, got batch shape {tuple(x.shape)}")
        h, logits = self.net(x.float() / 127.5 - 1.0)
        out = {FEATURE_NAME: h * self.feature_scale, "logits": logits,
               "logits_unbiased": logits - self.net.head.bias}
        return tuple(out[f] for f in self.features_list)


def register_extractors() -> list[str]:
    """Register ``ablate-<dataset>`` with torch-fidelity for every committed asset (idempotent)."""
    names = sorted(p.stem for p in ASSETS_DIR.glob("ablate-*.pt"))
    for name in names:
        if name not in FEATURE_EXTRACTORS_REGISTRY:
            register_feature_extractor(name, FeatureExtractorAblate)
    return names
