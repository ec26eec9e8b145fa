"""DiT's discrete schedule: the linear betas and the respacing of the index grid (IDDPM's ``space_timesteps``)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["linear_betas", "space_timesteps"]


def linear_betas(num_timesteps: int = 1000) -> Tensor:
    """beta_t = linspace(1e-4 s, 0.02 s, T), s = 1000 / T (DDPM Sec. 4; IDDPM's T-independent scaling)."""
    if int(num_timesteps) != num_timesteps or num_timesteps < 2:
        raise ValueError(f"num_timesteps must be an integer >= 2, got {num_timesteps!r}")
    s = 1000.0 / num_timesteps
    return torch.linspace(s * 1e-4, s * 0.02, int(num_timesteps), dtype=torch.float64)


def space_timesteps(num_timesteps: int, spec) -> list[int]:
    """The kept original indices (sorted) for a respacing ``spec`` (IDDPM Sec. 4, its ``space_timesteps``).

    ``spec``: ``""``/None (all steps); ``"N"`` or ``"N1,N2,..."`` (a list of ints): split [0, T) into equal
    sections and take N_i indices per section, evenly strided with rounding (``"250"`` of 1000 keeps
    {0, 4, 8, ..., 987, 991, 995, 999}: stride 999/249 rounded); ``"ddimN"``: the integer stride that gives
    exactly N steps, range(0, T, stride).
    """
    if spec is None or spec == "" or spec == []:
        return list(range(num_timesteps))
    if isinstance(spec, str):
        if spec.startswith("ddim"):
            n = int(spec[4:])
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == n:
                    return list(range(0, num_timesteps, stride))
            raise ValueError(
                f"respacing {spec!r}: no integer stride gives exactly {n} of {num_timesteps} steps"
            )
        try:
            spec = [int(c) for c in spec.split(",")]
        except ValueError:
            raise ValueError(f"bad respacing {spec!r}; valid forms: '', 'N', 'N1,N2,...', 'ddimN'") from None
    counts = [int(c) for c in spec]
    size_per, extra = divmod(num_timesteps, len(counts))
    kept, start = [], 0
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if not 1 <= count <= size:
            raise ValueError(f"respacing: cannot take {count} steps from a section of {size} steps")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        pos = 0.0
        for _ in range(count):
            kept.append(start + round(pos))  # Python's round, as the reference
            pos += stride
        start += size
    return sorted(set(kept))
