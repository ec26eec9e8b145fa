"""Classifier-free guidance (Ho & Salimans 2022) as a model wrapper, on the model's own prediction type.

.. math::
    \\hat f(x, t, y) = f(x, t, \\varnothing) + \\zeta\\, [f(x, t, y) - f(x, t, \\varnothing)]

(SiT Sec. 3.5 applies it to the velocity; DiT to the noise). All channels are guided by default. DiT and SiT's
``forward_with_cfg`` guide only the first 3 channels (a leftover from pixel-space code): ``legacy_channels=3``
reproduces that rule exactly, for their published numbers; the other channels keep the conditional output.
The wrapper runs the network once on a doubled batch (cond, null): one NFE, twice the FLOPs.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

__all__ = ["guided", "Guidance"]


class Guidance:
    """The ``guidance`` config group's target: classifier-free guidance ``scale`` (1 = none) and the channel
    rule (``legacy_channels=3``: DiT/SiT's guidance of the first three channels only)."""

    def __init__(self, scale: float = 1.0, legacy_channels: int | None = None):
        scale = float(scale)
        if not (scale >= 0 and math.isfinite(scale)):
            raise ValueError(f"guidance.scale must be a finite number >= 0, got {scale!r}")
        if legacy_channels is not None and (isinstance(legacy_channels, bool) or not isinstance(legacy_channels, int)
                                            or legacy_channels < 1):
            raise ValueError(f"guidance.legacy_channels must be null or a positive integer, got {legacy_channels!r}")
        self.scale, self.legacy_channels = scale, legacy_channels

    @property
    def active(self) -> bool:
        return self.scale != 1.0

    def describe(self) -> dict:
        return {"scale": self.scale, "legacy_channels": self.legacy_channels}

    def __repr__(self) -> str:
        return f"Guidance(scale={self.scale}, legacy_channels={self.legacy_channels})"


def guided(model: Callable, scale: float, null_class: int, legacy_channels: int | None = None) -> Callable:
    """A model ``g(x, t, y)`` applying classifier-free guidance with ``scale`` and the null label
    ``null_class``."""
    scale = float(scale)
    if not (scale >= 0 and math.isfinite(scale)):
        raise ValueError(f"guidance scale must be a finite number >= 0, got {scale!r}")
    if legacy_channels is not None and (not isinstance(legacy_channels, int) or legacy_channels < 1):
        raise ValueError(f"legacy_channels must be None or a positive int, got {legacy_channels!r}")
    if null_class is None:
        raise ValueError("classifier-free guidance needs the null class label (null_class), got None")

    def g(x, t, y=None):
        if y is None:
            raise ValueError("classifier-free guidance needs class labels y, got None")
        b = x.shape[0]
        out = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, null_class)]))
        cond, uncond = out[:b], out[b:]
        if legacy_channels is None:
            return uncond + scale * (cond - uncond)
        k = legacy_channels
        return torch.cat([uncond[:, :k] + scale * (cond[:, :k] - uncond[:, :k]), cond[:, k:]], dim=1)

    g.scale, g.null_class, g.legacy_channels = scale, null_class, legacy_channels
    return g
