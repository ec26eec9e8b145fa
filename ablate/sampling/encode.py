"""Encoding: the probability-flow ODE integrated from data (t_min) up to noise (t_max), the inverse of ODE
sampling (SiT's ``sample_ode(reverse=True)``, used for inversion and editing). Paper time, t = 0 data:

.. math::
    \\frac{dX_t}{dt} = v(X_t, t),\\qquad X_{t_{\\min}} = x,\\qquad z = X_{t_{\\max}}

(SiT eq. 3; v from any prediction by eq. 9). The same solvers as :class:`~ablate.sampling.ode.ODESampler`
(``euler``, ``heun``, the torchdiffeq methods), on the same float64 grid run the other way, so that decoding z
with the same settings inverts the encoding up to the solver's error (:func:`round_trip` measures it). The
interval defaults to the ODE's sample interval (``transport.defaults.sample_interval``), as SiT's
``check_interval(reverse=True)``: [0, 1] for a linear/GVP velocity model, [eps, 1 - eps] otherwise, [eps, 1]
for VP.

For Gaussian data N(mu, s^2 I) the map is closed-form for every interpolant: x_t ~ N(alpha_t mu,
(alpha_t^2 s^2 + sigma_t^2) I), the flow is monotone per dimension and so maps quantiles to quantiles,
z = alpha_b mu + sqrt(V_b / V_a) (x - alpha_a mu), V_t = alpha_t^2 s^2 + sigma_t^2 (tests/sampling).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from ..transport.interpolants import get_interpolant
from .ode import ODESampler

__all__ = ["EncodeOutput", "RoundTripOutput", "encode", "round_trip"]


@dataclass
class EncodeOutput:
    """``z``: the latent at t_max; ``nfe``: counted network evaluations; ``trajectory``/``times``: the states
    from x (at t_min) to z and their float64 paper times, with ``return_trajectory`` (None otherwise)."""

    z: Tensor
    nfe: int
    trajectory: list[Tensor] | None = None
    times: list[float] | None = None


@dataclass
class RoundTripOutput:
    """``error``: per-sample root-mean-square of decode(encode(x)) - x over the non-batch dimensions (the
    data's units); ``z``: the latent; ``x``: the reconstruction; NFE of each direction."""

    error: Tensor
    z: Tensor
    x: Tensor
    nfe_encode: int
    nfe_decode: int


def _solver(interpolant, prediction, reverse, method, steps, **kw) -> ODESampler:
    return ODESampler(get_interpolant(interpolant), prediction, method, steps, reverse=reverse, **kw)


def encode(
    model: Callable,
    x: Tensor,
    interpolant,
    prediction: str,
    *,
    y=None,
    method: str = "dopri5",
    steps: int = 125,
    atol: float = 1e-6,
    rtol: float = 1e-3,
    sample_eps: float | None = None,
    t_min: float | None = None,
    t_max: float | None = None,
    grid: str = "uniform",
    return_trajectory: bool = False,
    **guidance,
) -> EncodeOutput:
    """The latent z = X_{t_max} of data ``x`` = X_{t_min} under the PF-ODE of ``model(x, t, y)`` (paper time,
    prediction of type ``prediction``), and the counted NFE.

    ``method``: ``dopri5`` (default, adaptive with ``atol``/``rtol``, as SiT's ``sample_ode``), ``heun``
    (2 NFE per step), ``euler``, or any torchdiffeq method of ``ODE_METHODS``; fixed methods take ``steps``
    solver steps. ``guidance`` (``guidance_scale``, ``null_class``, ``legacy_channels``) as for samplers.
    """
    s = _solver(interpolant, prediction, True, method, steps, atol=atol, rtol=rtol, sample_eps=sample_eps,
                t_min=t_min, t_max=t_max, grid=grid, **guidance)
    out = s(model, x, y, return_trajectory=return_trajectory)
    return EncodeOutput(out.x, out.nfe, out.trajectory, out.times)


@torch.no_grad()
def round_trip(
    model: Callable,
    x: Tensor,
    interpolant,
    prediction: str,
    *,
    y=None,
    method: str = "dopri5",
    steps: int = 125,
    atol: float = 1e-6,
    rtol: float = 1e-3,
    sample_eps: float | None = None,
    t_min: float | None = None,
    t_max: float | None = None,
    grid: str = "uniform",
    **guidance,
) -> RoundTripOutput:
    """Encode ``x`` (:func:`encode`), decode the latent with the same solver settings (ODE sampling from t_max
    down to t_min) and report the per-sample RMS reconstruction error: a check of a model's invertibility
    and of the solver's accuracy (an exact solver returns x: the error is the solver's, both ways)."""
    kw = dict(atol=atol, rtol=rtol, sample_eps=sample_eps, t_min=t_min, t_max=t_max, grid=grid, **guidance)
    enc = _solver(interpolant, prediction, True, method, steps, **kw)(model, x, y)
    dec = _solver(interpolant, prediction, False, method, steps, **kw)(model, enc.x, y)
    err = (dec.x - x).flatten(1).pow(2).mean(1).sqrt()
    return RoundTripOutput(err, enc.x, dec.x, enc.nfe, dec.nfe)
