"""The time axis owns how t reaches the network, so that changing the discretization changes
only the discretization, not also the conditioning scale.

- :class:`ContinuousTime`: the library passes paper time t in [0, 1] (t = 0 data, t = 1 noise); the network
  sees ``"t"`` (ablate's default), ``"1-t"`` (the SiT repository's time, which its released weights
  expect), or ``"999t"`` (DiT's index scale: keeps the embedding's input range of a DiT-trained network
  when moving from discrete to continuous time; the input 999 t equals the DDPM index i at t = i / 999).
- :class:`DiscreteTime`: DiT's discrete axis; both the library and the network use the integer index 0..T-1.

The axis also says whether the network learns its variance (``learn_sigma``: DiT's discrete models do, for
the hybrid L_simple + VB loss) and which sampler families can sample it (``kind``: a sampler family declares
the time kind it integrates). ``DiscreteTime.requires`` is the DDPM baseline's fixed part of the walk.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

__all__ = ["NETWORK_TIMES", "ContinuousTime", "DiscreteTime"]

NETWORK_TIMES = ("t", "1-t", "999t")


class ContinuousTime:
    """Map paper time t (float tensor [B] in [0, 1]) to the network's time input:
    ``"t"``: t;  ``"1-t"``: 1 - t (SiT repository);  ``"999t"``: 999 t (DiT's index scale)."""

    kind = "continuous"
    requires: dict[str, str] = {}

    def __init__(self, network_time: str = "t", learn_sigma: bool = False):
        if network_time not in NETWORK_TIMES:
            raise ValueError(f"time.network_time={network_time!r} is not valid; valid choices: {list(NETWORK_TIMES)}")
        self.network_time, self.learn_sigma = network_time, bool(learn_sigma)

    def describe(self) -> dict:
        return {"name": self.kind, "network_time": self.network_time, "learn_sigma": self.learn_sigma}

    def to_network(self, t: Tensor) -> Tensor:
        t = torch.as_tensor(t)
        if not t.is_floating_point():
            raise TypeError(f"ContinuousTime expects float paper time in [0, 1], got dtype {t.dtype}")
        if self.network_time == "t":
            return t
        if self.network_time == "1-t":
            return 1 - t
        return 999 * t

    def wrap(self, net: Callable) -> Callable:
        """f(x, t, y) = net(x, to_network(t), y), taking paper time t."""

        def f(x, t, y=None):
            return net(x, self.to_network(t), y)

        return f

    def __repr__(self):
        return f"ContinuousTime(network_time={self.network_time!r}, learn_sigma={self.learn_sigma})"


class DiscreteTime:
    """The DDPM index axis of DiT: the network sees the integer index 0..T-1 unchanged.

    Discrete time is DiT's DDPM: noise prediction on the VP schedule with its hybrid loss (no extra weighting);
    ``requires`` states it, and the configuration layer refuses other axis values with this table.
    """

    kind = "discrete"
    requires = {"prediction": "noise", "interpolant": "vp", "weighting": "none"}

    def __init__(self, num_timesteps: int = 1000, learn_sigma: bool = True):
        if int(num_timesteps) != num_timesteps or num_timesteps < 1:
            raise ValueError(f"time.num_timesteps must be a positive integer, got {num_timesteps!r}")
        self.num_timesteps, self.learn_sigma = int(num_timesteps), bool(learn_sigma)

    def describe(self) -> dict:
        return {"name": self.kind, "num_timesteps": self.num_timesteps, "learn_sigma": self.learn_sigma}

    def to_network(self, index: Tensor) -> Tensor:
        index = torch.as_tensor(index)
        if index.is_floating_point() or index.is_complex() or index.dtype == torch.bool:
            raise TypeError(f"DiscreteTime expects an integer index tensor, got dtype {index.dtype}")
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.num_timesteps):
            raise ValueError(
                f"index out of range [0, {self.num_timesteps - 1}]: "
                f"min {int(index.min())}, max {int(index.max())}"
            )
        return index

    def wrap(self, net: Callable) -> Callable:
        """f(x, index, y) = net(x, index, y) after checking the index range."""

        def f(x, index, y=None):
            return net(x, self.to_network(index), y)

        return f

    def __repr__(self):
        return f"DiscreteTime(num_timesteps={self.num_timesteps}, learn_sigma={self.learn_sigma})"
