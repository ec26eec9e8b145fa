"""What every sampler shares: the output record, the model-calling convention and the prediction algebra.

Signature of every sampler (k-diffusion's habit, one for all)::

    sampler(model, z, y=None, *, noise=None, generator=None, seeds=None, return_trajectory=False)
        -> SampleOutput

``model(x, t, y)`` takes paper time t (float [B], t = 0 data, t = 1 noise) and returns the prediction of the
declared type (``noise``/``score``/``velocity``/``x0``); ``z`` is the initial noise at t_max. Step noises:
``noise`` (replayed), else ``seeds`` (per-image streams, :mod:`ablate.sampling.noise`), else ``generator``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from ..transport.interpolants import Interpolant, PathCoefficients
from ..transport.predictions import convert, validate_prediction
from .guidance import guided
from .nfe import NFECounter

__all__ = ["SampleOutput", "Field", "BaseSampler", "SamplingContext", "SAMPLER_FAMILIES", "steps_for_nfe"]

SAMPLER_FAMILIES: dict[str, type["BaseSampler"]] = {}  # filled by every sampler class that sets ``family``


@dataclass
class SamplingContext:
    """What a sampler family needs from the other axes to build itself (the configuration layer fills it):
    the path and the network's prediction (continuous time), the built SDE coefficient (or a callable
    ``interpolant -> coefficient``), the DDPM process (discrete time), the guidance settings and the null
    class, and the endpoint override ``sample_eps``."""

    interpolant: Interpolant | None = None
    prediction: str = "velocity"
    coefficient: Callable | None = None
    ddpm: object | None = None
    guidance_scale: float = 1.0
    legacy_channels: int | None = None
    null_class: int | None = None
    sample_eps: float | None = None

    @property
    def guidance(self) -> dict:
        return dict(guidance_scale=self.guidance_scale, null_class=self.null_class,
                    legacy_channels=self.legacy_channels)


def steps_for_nfe(nfe_of: Callable[[int], int | None], nfe: int, what: str) -> int:
    """The number of steps whose NFE (``nfe_of(steps)``) is exactly ``nfe``; a clear error when none is."""
    if isinstance(nfe, bool) or int(nfe) != nfe or nfe < 1:
        raise ValueError(f"sampler.nfe must be a positive integer, got {nfe!r}")
    for steps in range(1, int(nfe) + 2):
        if nfe_of(steps) == nfe:
            return steps
    reachable = sorted({n for n in (nfe_of(k) for k in range(1, int(nfe) + 2)) if n is not None})[:6]
    raise ValueError(f"sampler.nfe={nfe} is not reachable with {what}; the nearest budgets it spends are "
                     f"{reachable}... (NFE per step and the last step decide it)")


@dataclass
class SampleOutput:
    """``x``: the samples; ``nfe``: counted network evaluations; ``trajectory``: the states
    [x_tmax, ..., x] or None; ``times``: the float64 paper times of those states (None where not recorded)."""

    x: Tensor
    nfe: int
    trajectory: list[Tensor] | None = None
    times: list[float] | None = field(default=None)


class Field:
    """The velocity and score implied by one model evaluation at (x, t) (SiT eq. 9 by algebra: one NFE).

    ``t`` is a paper time shared by the batch (a float or a 0-dim tensor) or one time per sample (a tensor
    [B]); coefficients are computed in float64 and cast to x's dtype.
    """

    def __init__(self, interpolant: Interpolant, prediction: str):
        self.interpolant = interpolant
        self.prediction = validate_prediction(prediction)

    def coefficients(self, t, like: Tensor) -> PathCoefficients:
        """Path coefficients at t: 0-dim (on the CPU) for a shared t, [B, 1, ...] for per-sample times."""
        if _per_sample(t):
            return self.interpolant(t.detach().to(torch.float64)).like(like)
        c = self.interpolant(torch.tensor(float(t), dtype=torch.float64))
        return PathCoefficients(
            *(v.to(like.dtype) for v in (c.alpha, c.sigma, c.d_alpha, c.d_sigma, c.sigma_d_sigma))
        )

    def times(self, t, x: Tensor) -> Tensor:
        """The network's time input: a float tensor [B] of paper times in x's dtype and device."""
        if _per_sample(t):
            if t.shape != (x.shape[0],):
                raise ValueError(f"per-sample times must have shape [{x.shape[0]}], got {tuple(t.shape)}")
            return t.to(dtype=x.dtype, device=x.device)
        return torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)

    def evaluate(self, model: Callable, x: Tensor, t, y=None) -> tuple[Tensor, PathCoefficients]:
        return model(x, self.times(t, x), y), self.coefficients(t, x)

    def to(self, pred: Tensor, dst: str, x: Tensor, c: PathCoefficients, check: bool = True) -> Tensor:
        return convert(pred, self.prediction, dst, x, c, check)


def _per_sample(t) -> bool:
    return isinstance(t, Tensor) and t.ndim > 0


class BaseSampler:
    """Holds the guidance settings and wraps the model (guidance, then NFE counting).

    A sampler *family* is a subclass that sets ``family`` (its config-group name, e.g. ``ode``), ``time_kind``
    (``continuous`` or ``discrete``: the time axis it samples) and implements the classmethod
    ``build(ctx: SamplingContext, **args)`` that the ``sampler`` config group targets; the class registers
    itself in :data:`SAMPLER_FAMILIES`. ``expected_nfe`` and ``tag`` come from the built object.
    """

    name = "sampler"
    family: str | None = None
    time_kind = "continuous"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "family" in cls.__dict__ and cls.family:
            taken = SAMPLER_FAMILIES.get(cls.family)
            if taken is not None and taken.__qualname__ != cls.__qualname__:
                raise ValueError(f"sampler family {cls.family!r} is taken by {taken.__qualname__}")
            SAMPLER_FAMILIES[cls.family] = cls

    @classmethod
    def build(cls, ctx: SamplingContext, **args) -> "BaseSampler":
        raise NotImplementedError(f"{cls.__name__} is not a sampler family (no build)")

    def describe(self) -> dict:
        """Flat description for results rows: family, solver, steps, counted-NFE budget, guidance."""
        return {"sampler": self.family, "solver": getattr(self, "method", self.family),
                "sampler_steps": getattr(self, "steps", None), "nfe_budget": self.expected_nfe,
                "guidance": self.guidance_scale, "sampler_tag": self.tag}

    def __init__(
        self, guidance_scale: float = 1.0, null_class: int | None = None, legacy_channels: int | None = None
    ):
        g = float(guidance_scale)
        if not (g >= 0 and math.isfinite(g)):
            raise ValueError(f"guidance_scale must be a finite number >= 0, got {guidance_scale!r}")
        if g != 1.0 and null_class is None:
            raise ValueError(f"guidance_scale={g} needs null_class (the label of the unconditional class)")
        self.guidance_scale, self.null_class, self.legacy_channels = g, null_class, legacy_channels

    def wrap(self, model: Callable) -> NFECounter:
        if self.guidance_scale != 1.0:
            model = guided(model, self.guidance_scale, self.null_class, self.legacy_channels)
        return NFECounter(model)

    @property
    def tag(self) -> str:
        raise NotImplementedError

    def __call__(
        self, model, z, y=None, *, noise=None, generator=None, seeds=None, return_trajectory=False
    ) -> SampleOutput:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(tag={self.tag!r})"
