"""Likelihood through the probability-flow ODE (instantaneous change of variables; Chen et al. 2018,
Song et al. 2021 eq. 39; SiT's ``sample_ode_likelihood``), paper time, integrated from the data end t_min up
to the noise end t_max:

.. math::
    \\log p_{t_{\\min}}(x) = \\log \\mathcal N(x_{t_{\\max}}; 0, I) + \\int_{t_{\\min}}^{t_{\\max}}
    \\nabla\\!\\cdot v(x_t, t)\\, dt, \\qquad \\frac{dx_t}{dt} = v(x_t, t),\\ x_{t_{\\min}} = x

The prior is the standard normal at t_max, as in SiT (exact for linear/GVP at t_max = 1; for VP
alpha(1) ~ 0.0066 leaves a tiny bias). The divergence is ``exact`` (one backward pass per dimension) or
``hutchinson`` (Hutchinson 1989: E[eps^T (dv/dx) eps], one fixed Rademacher or Gaussian probe per sample for
the whole solve, as in FFJORD/SiT).

Units. ``nats`` = -log p per sample; ``bpd`` = bits per dimension in the *data's own* units:
if the model sees x_model = data_scale * x_data (+ shift), then -log p_data = -log p_model - D log(data_scale)
and bpd = (-log p_data) / (D log 2). For 8-bit images mapped to [-1, 1] with uniform dequantisation, pass
``data_scale = 2 / 256`` (it adds log2(128) = 7 bits per dimension).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from ..transport.defaults import sample_interval
from ..transport.interpolants import get_interpolant
from .base import Field
from .grids import time_grid
from .nfe import NFECounter
from .ode import ADAPTIVE_METHODS

__all__ = ["NLLOutput", "nll", "DIVERGENCES", "with_divergence", "prior_logp"]

DIVERGENCES = ("hutchinson", "exact")


@dataclass
class NLLOutput:
    """Per-sample negative log-likelihood in nats and bits/dim (data units), the counted NFE, and ``z``: the
    final state x_{t_max} of the ODE, the latent of the data (SiT's ``sample_ode_likelihood`` returns it too;
    the same map as :func:`ablate.sampling.encode`)."""

    nats: Tensor
    bpd: Tensor
    nfe: int
    z: Tensor | None = None


def prior_logp(z: Tensor) -> Tensor:
    """log N(z; 0, I) per sample, summed over the non-batch dimensions (nats):
    -|z|^2 / 2 - D/2 log(2 pi), D = z[0].numel() (SiT's ``Transport.prior_logp``)."""
    dim = z[0].numel()
    return -0.5 * z.flatten(1).pow(2).sum(1) - 0.5 * dim * math.log(2 * math.pi)


def with_divergence(
    f: Callable[[Tensor], Tensor], x: Tensor, kind: str = "exact", probe: Tensor | None = None
):
    """(f(x), div_x f(x)) per sample; ``exact`` sums d f_i / d x_i, ``hutchinson`` uses eps^T (df/dx) eps."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        out = f(x)
        if kind not in DIVERGENCES:
            raise ValueError(f"unknown divergence {kind!r}; valid choices: {list(DIVERGENCES)}")
        if not out.requires_grad:  # f does not depend on x (e.g. a constant field): its divergence is 0
            return out.detach(), torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        if kind == "hutchinson":
            (g,) = torch.autograd.grad((out * probe).sum(), x)
            div = (g * probe).flatten(1).sum(1)
        elif kind == "exact":
            flat = out.flatten(1)
            div = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
            for i in range(flat.shape[1]):
                (g,) = torch.autograd.grad(flat[:, i].sum(), x, retain_graph=i + 1 < flat.shape[1])
                div = div + g.flatten(1)[:, i]
        else:
            raise ValueError(f"unknown divergence {kind!r}; valid choices: {list(DIVERGENCES)}")
    return out.detach(), div.detach()


def nll(
    model: Callable,
    x0: Tensor,
    interpolant,
    prediction: str,
    *,
    y=None,
    divergence: str = "hutchinson",
    method: str = "dopri5",
    steps: int = 100,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    t_min: float | None = None,
    t_max: float | None = None,
    sample_eps: float | None = None,
    probe: str = "rademacher",
    generator: torch.Generator | None = None,
    data_scale: float = 1.0,
) -> NLLOutput:
    """Negative log-likelihood of ``x0`` under the probability-flow ODE of ``model(x, t, y)`` (module
    docstring).

    ``divergence``: ``hutchinson`` or ``exact``. ``method``: a torchdiffeq
    method; adaptive ones use atol/rtol, fixed ones (``euler``, ``heun`` = heun2, ``midpoint``, ``rk4``) use
    ``steps`` on a uniform float64 grid. The interval defaults to the ODE's sample interval. The returned
    ``z`` is the state at t_max (the latent), as SiT's likelihood returns it.
    """
    from torchdiffeq import odeint

    kind = divergence
    if kind not in DIVERGENCES:
        raise ValueError(f"unknown divergence {kind!r}; valid choices: {list(DIVERGENCES)}")
    if probe not in ("rademacher", "gaussian"):
        raise ValueError(f"unknown Hutchinson probe {probe!r}; valid choices: ['rademacher', 'gaussian']")
    if not (data_scale > 0 and math.isfinite(data_scale)):
        raise ValueError(f"data_scale must be a finite number > 0, got {data_scale!r}")
    interpolant = get_interpolant(interpolant)  # a name or an Interpolant
    lo, hi = sample_interval(interpolant, prediction, sde=False, eps=sample_eps)
    lo = lo if t_min is None else float(t_min)
    hi = hi if t_max is None else float(t_max)
    fld, m = Field(interpolant, prediction), NFECounter(model)
    eps = None
    if kind == "hutchinson":
        dev = generator.device if generator is not None else x0.device
        eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=dev).to(x0.device)
        if probe == "rademacher":
            eps = torch.sign(eps) + (eps == 0)

    def rhs(t, state):
        x, _ = state
        tf = float(t)

        def v(xx):
            pred, c = fld.evaluate(m, xx, tf, y)
            return fld.to(pred, "velocity", xx, c)

        vel, div = with_divergence(v, x, kind, eps)
        return vel, div

    state = (x0, torch.zeros(x0.shape[0], dtype=x0.dtype, device=x0.device))
    fixed = {"euler": "euler", "heun": "heun2", "midpoint": "midpoint", "rk4": "rk4"}
    if method in ADAPTIVE_METHODS:
        t = torch.tensor([lo, hi], dtype=x0.dtype, device=x0.device)  # steps land on t_max (step_t)
        xs, ds = odeint(rhs, state, t, method=method, atol=atol, rtol=rtol, options=dict(step_t=t[1:]))
    elif method in fixed:
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
        t = time_grid(hi, lo, steps + 1).flip(0).to(dtype=x0.dtype, device=x0.device)
        xs, ds = odeint(rhs, state, t, method=fixed[method])
    else:
        raise ValueError(
            f"unknown likelihood solver {method!r}; valid: {list(ADAPTIVE_METHODS) + list(fixed)}"
        )
    x1, delta = xs[-1], ds[-1]
    dim = x0[0].numel()
    nats = -(prior_logp(x1) + delta)
    nats_data = nats - dim * math.log(data_scale)
    return NLLOutput(nats=nats_data, bpd=nats_data / (dim * math.log(2)), nfe=m.nfe, z=x1)
