"""Counting network evaluations (NFE) with a wrapper, never by inference.

One NFE is one call of the (possibly guidance-wrapped) model on a batch: a classifier-free-guided call
that runs the network on a doubled batch counts once here, and ``sample_gflops`` doubles it (docs/design.md, "GFLOPs").
"""

from __future__ import annotations

from typing import Callable

__all__ = ["NFECounter"]


class NFECounter:
    """``NFECounter(model)`` behaves like ``model`` and counts its calls in ``.nfe`` (reset with
    :meth:`reset`)."""

    def __init__(self, model: Callable):
        if not callable(model):
            raise TypeError(f"NFECounter needs a callable model, got {type(model).__name__}")
        self.model = model
        self.nfe = 0

    def __call__(self, *args, **kwargs):
        self.nfe += 1
        return self.model(*args, **kwargs)

    def reset(self) -> None:
        self.nfe = 0
