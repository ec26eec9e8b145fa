"""Per-image seeds: image i always sees the same initial noise z and the same step noises, whatever the
batch it is sampled in and whichever sampler runs (paired comparisons, EDM's habit). Each (seed, stream)
pair gets its own generator, seeded through numpy's ``SeedSequence`` (stream 0 = z, stream k + 1 = the
noise of step k), so step noises are random-access and independent of call order.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["image_generator", "per_image_noise", "PerImageNoise", "step_noise_source"]


def image_generator(seed: int, stream: int = 0) -> torch.Generator:
    """A CPU generator for image ``seed`` and noise stream ``stream`` (0 = initial z, k + 1 = SDE step k).

    Noise is always drawn on the CPU and then moved, so an image's noise does not depend on the device."""
    if int(seed) < 0 or int(stream) < 0:
        raise ValueError(f"seed and stream must be >= 0, got seed={seed!r}, stream={stream!r}")
    state = np.random.SeedSequence([int(seed), int(stream)]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


def _draw(seeds: Sequence[int], stream: int, shape, dtype, device) -> Tensor:
    x = torch.stack(
        [torch.randn(tuple(shape), generator=image_generator(s, stream), dtype=dtype) for s in seeds]
    )
    return x.to(device)


class PerImageNoise:
    """Noise for a batch of images with per-image ``seeds``; ``shape`` is one image's shape.

    ``.z`` is the initial noise [B, *shape]; ``noise(k)`` the Gaussian noise of SDE step k. Pass the object
    as a sampler's ``noise=`` and ``.z`` as its ``z`` (or pass ``seeds=`` to the sampler: the same noise).
    """

    def __init__(self, seeds: Sequence[int], shape, dtype=torch.float32, device="cpu"):
        self.seeds = [int(s) for s in seeds]
        if not self.seeds:
            raise ValueError("PerImageNoise needs at least one seed")
        self.shape, self.dtype, self.device = tuple(shape), dtype, device
        self.z = _draw(self.seeds, 0, self.shape, dtype, device)

    def __call__(self, k: int) -> Tensor:
        if k < 0:
            raise ValueError(f"step index must be >= 0, got {k}")
        return _draw(self.seeds, k + 1, self.shape, self.dtype, self.device)


def per_image_noise(seeds: Sequence[int], shape, dtype=torch.float32, device="cpu") -> Tensor:
    """The initial noise z [B, *shape] of images ``seeds`` (stream 0 of :class:`PerImageNoise`)."""
    if len(seeds) == 0:
        raise ValueError("per_image_noise needs at least one seed")
    return _draw([int(s) for s in seeds], 0, tuple(shape), dtype, device)


def step_noise_source(noise, generator, like: Tensor, seeds=None) -> Callable[[int], Tensor]:
    """Normalise a sampler's ``noise=`` / ``seeds=`` arguments to a function k -> noise of step k shaped like
    ``like``.

    ``noise`` may be None, a tensor [S, B, ...], a sequence of tensors, or a callable k -> tensor (e.g.
    :class:`PerImageNoise`). With ``noise=None``, ``seeds`` (one per image) draws step k of image i from its
    own stream (as :class:`PerImageNoise`); without seeds, fresh ``torch.randn`` from ``generator``.
    """
    if noise is None and seeds is not None:
        seeds = [int(s) for s in seeds]
        if len(seeds) != like.shape[0]:
            raise ValueError(f"got {len(seeds)} seeds for a batch of {like.shape[0]}")
        return lambda k: _draw(seeds, k + 1, like.shape[1:], like.dtype, like.device)
    if noise is None:
        dev = generator.device if generator is not None else like.device
        return lambda k: torch.randn(like.shape, generator=generator, dtype=like.dtype, device=dev).to(
            like.device
        )
    if callable(noise):
        fn = noise
    elif isinstance(noise, Tensor) or isinstance(noise, (list, tuple)):
        fn = noise.__getitem__
    else:
        raise TypeError(
            f"noise must be None, a tensor, a sequence of tensors or a callable, got {type(noise)}"
        )

    def get(k):
        try:
            e = fn(k)
        except IndexError:
            raise ValueError(f"replayed noise has no entry for step {k}") from None
        if tuple(e.shape) != tuple(like.shape):
            raise ValueError(
                f"replayed noise of step {k} has shape {tuple(e.shape)}, expected {tuple(like.shape)}"
            )
        return e.to(dtype=like.dtype, device=like.device)

    return get
