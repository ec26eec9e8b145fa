"""Time grids in float64, separate from the solver step (k-diffusion, EDM).

A grid is a 1-D float64 tensor of paper times from t_max (noise side) down to t_min (data side), inclusive.
``uniform`` is the default and the only grid SiT uses (its ``torch.linspace``); ``quadratic`` is offered for
ablations. A new grid is one more branch in :func:`time_grid` and one more name in :data:`GRIDS`.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["GRIDS", "time_grid"]

GRIDS = ("uniform", "quadratic")


def time_grid(t_max: float, t_min: float, points: int, kind: str = "uniform") -> Tensor:
    """``points`` float64 times from t_max down to t_min (``points - 1`` intervals).

    - ``uniform``:   t_i = t_max + (t_min - t_max) i / (points - 1)
    - ``quadratic``: t_i = t_min + (t_max - t_min) (1 - i / (points - 1))^2 (denser near the data end)
    """
    if not isinstance(points, int) or isinstance(points, bool) or points < 2:
        raise ValueError(f"a time grid needs an integer number of points >= 2, got {points!r}")
    if not (0.0 <= t_min < t_max <= 1.0):
        raise ValueError(f"a time grid needs 0 <= t_min < t_max <= 1, got t_min={t_min!r}, t_max={t_max!r}")
    u = torch.linspace(0.0, 1.0, points, dtype=torch.float64)
    if kind == "uniform":
        g = t_max + (t_min - t_max) * u
    elif kind == "quadratic":
        g = t_min + (t_max - t_min) * (1 - u) ** 2
    else:
        raise ValueError(f"unknown time grid {kind!r}; valid choices: {list(GRIDS)}")
    g[0], g[-1] = t_max, t_min  # exact ends
    return g
