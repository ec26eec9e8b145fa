"""Prediction targets and the conversions between every pair (SiT paper eqs. 6-9, paper time).

With x_t = alpha x0 + sigma eps (x0 = data), the four targets a network may predict are

- ``noise``:    eps
- ``x0``:       x0 (data)
- ``score``:    s = grad log p_t(x_t) = -E[eps | x_t] / sigma_t
- ``velocity``: v = alpha' x0 + sigma' eps

Every conversion goes through the pair (x0, eps), which is exact for the conditional expectations because all
four are affine in (x0, eps) given x_t. From the velocity (solving the 2x2 system with
det = alpha sigma' - sigma alpha'):

.. math::
    \\hat x_0 = (\\sigma' x_t - \\sigma v) / \\det,\\qquad
    \\hat\\varepsilon = (\\alpha v - \\alpha' x_t) / \\det

and so the score from the velocity (SiT eq. 9)

.. math::
    s = -\\hat\\varepsilon / \\sigma
      = \\frac{\\alpha v - \\alpha' x_t}{\\sigma (\\alpha' \\sigma - \\alpha \\sigma')},\\qquad
    v = \\frac{\\alpha'}{\\alpha} x_t - \\lambda_t s,\\
    \\lambda_t = \\sigma\\sigma' - \\alpha'\\sigma^2/\\alpha.

Endpoints (the table in README.md lists every pair at both ends of every interpolant). A conversion whose
value has a finite limit at an end returns that limit; one that has none raises :class:`EndpointError` naming
the conversion, rather than returning inf/NaN:

- dividing by sigma = 0 at the data end (anything -> score except from velocity, x0 -> noise/velocity) and by
  alpha = 0 at the noise end of linear/GVP (noise/score -> x0/velocity) raises;
- VP at t = 0 has sigma' = inf but sigma sigma' = alpha^2 beta / 2 finite (``PathCoefficients.sigma_d_sigma``),
  so the conversions are written with that product: score -> velocity is alpha'/alpha x_t - lambda s
  (SiT eq. 9) and velocity -> score is its inverse (alpha' x_t - alpha v) / (alpha lambda), both finite;
  velocity -> x0 takes the limit x_t / alpha and velocity -> noise the limit 0; noise -> velocity
  (sigma' eps, no limit from eps alone) raises;
- as a last guard, a non-finite result from finite inputs raises :class:`EndpointError` too.

Pass ``check=False`` to skip the checks (host syncs) inside hot loops whose time grid was validated up front.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .interpolants import PathCoefficients

__all__ = ["PREDICTIONS", "EndpointError", "to_x0_eps", "from_x0_eps", "convert", "validate_prediction"]

PREDICTIONS = ("noise", "score", "velocity", "x0")


class EndpointError(ValueError):
    """A conversion or coefficient is undefined (0/0 or x/0) at the requested time."""


def validate_prediction(kind: str) -> str:
    if kind not in PREDICTIONS:
        raise ValueError(f"unknown prediction {kind!r}; valid choices: {list(PREDICTIONS)}")
    return kind


def _where(c: PathCoefficients) -> str:
    return f"alpha={c.alpha.flatten()[:4].tolist()}, sigma={c.sigma.flatten()[:4].tolist()}"


def _nonzero(den: Tensor, what: str, c: PathCoefficients, check: bool) -> Tensor:
    if check and bool((den == 0).any()):
        raise EndpointError(
            f"{what} is undefined where its denominator is 0 ({_where(c)}): move the time grid off the endpoint "
            "(the endpoint eps settings: train_eps / sample_eps)"
        )
    return den


def _finite(coef: Tensor, what: str, c: PathCoefficients, check: bool) -> Tensor:
    if check and not bool(torch.isfinite(coef).all()):
        raise EndpointError(
            f"{what} is infinite here ({_where(c)}, sigma'={c.d_sigma.flatten()[:4].tolist()}) and has no "
            "finite limit from one prediction: move the time grid off the endpoint (train_eps / sample_eps)"
        )
    return coef


def _at_an_end(c: PathCoefficients) -> bool:
    """A coefficient is 0 or not finite: only then can a conversion of finite inputs be non-finite. Checked on
    the coefficients (CPU scalars for a time shared by the batch), so the interior costs no device sync."""
    v = torch.cat([torch.as_tensor(a).flatten() for a in (c.alpha, c.sigma, c.d_alpha, c.d_sigma)])
    return bool(((v == 0) | ~torch.isfinite(v)).any())


def _guard(out: Tensor, what: str, pred: Tensor, x_t: Tensor, c: PathCoefficients, check: bool) -> Tensor:
    """Last line: a non-finite result from finite inputs is an endpoint the checks above did not name."""
    if check and _at_an_end(c) and not bool(torch.isfinite(out).all()):
        if bool(torch.isfinite(pred).all()) and bool(torch.isfinite(x_t).all()):
            raise EndpointError(f"{what} is not finite here ({_where(c)}): it has no finite limit at this end")
    return out


def _x0_from_velocity(v: Tensor, x_t: Tensor, c: PathCoefficients) -> Tensor:
    """x0 = (sigma' x_t - sigma v) / (alpha sigma' - sigma alpha'). Only sigma / sigma' matters, so where
    sigma' is infinite (VP, t = 0) the pair (sigma, sigma') is replaced by its limit (0, 1): x0 = x_t / alpha."""
    inf = torch.isinf(torch.as_tensor(c.d_sigma))
    ds = torch.where(inf, torch.ones_like(c.d_sigma), c.d_sigma)
    s = torch.where(inf, torch.zeros_like(c.sigma), c.sigma)
    return (ds * x_t - s * v) / (c.alpha * ds - s * c.d_alpha)


def _score_den(c: PathCoefficients) -> Tensor:
    """alpha lambda_t = alpha sigma sigma' - alpha' sigma^2 (= sigma det), finite at every end."""
    return c.alpha * c.s_ds() - c.d_alpha * c.sigma**2


def to_x0_eps(kind: str, pred: Tensor, x_t: Tensor, c: PathCoefficients, check: bool = True):
    """(x0_hat, eps_hat) implied by a prediction of type ``kind`` at x_t (c already broadcast against x_t)."""
    if kind == "noise":
        eps = pred
        x0 = (x_t - c.sigma * eps) / _nonzero(c.alpha, "noise -> x0 (divides by alpha)", c, check)
    elif kind == "score":
        eps = -c.sigma * pred
        x0 = (x_t - c.sigma * eps) / _nonzero(c.alpha, "score -> x0 (divides by alpha)", c, check)
    elif kind == "x0":
        x0 = pred
        eps = (x_t - c.alpha * x0) / _nonzero(c.sigma, "x0 -> noise (divides by sigma)", c, check)
    elif kind == "velocity":
        det = _nonzero(c.alpha * c.d_sigma - c.sigma * c.d_alpha, "velocity conversion (det)", c, check)
        x0 = _x0_from_velocity(pred, x_t, c)
        eps = (c.alpha * pred - c.d_alpha * x_t) / det  # det = inf at VP t = 0: eps -> 0, the limit
    else:
        validate_prediction(kind)
    return x0, eps


def from_x0_eps(kind: str, x0: Tensor, eps: Tensor, c: PathCoefficients, check: bool = True) -> Tensor:
    """The target of type ``kind`` for given (x0, eps): the regression target of the training loss.

    The conditional velocity alpha' x0 + sigma' eps is infinite at VP t = 0 (sigma' = inf): EndpointError."""
    if kind == "noise":
        return eps
    if kind == "x0":
        return x0
    if kind == "score":
        return -eps / _nonzero(c.sigma, "-> score (divides by sigma)", c, check)
    if kind == "velocity":
        return c.d_alpha * x0 + _finite(c.d_sigma, "the conditional velocity (sigma' eps)", c, check) * eps
    validate_prediction(kind)


def convert(pred: Tensor, src: str, dst: str, x_t: Tensor, c: PathCoefficients, check: bool = True) -> Tensor:
    """Convert a prediction of type ``src`` at (x_t, t) into ``dst``; ``c = interpolant(t).like(x_t)``."""
    validate_prediction(src)
    validate_prediction(dst)
    if src == dst:
        return pred
    return _guard(_convert(pred, src, dst, x_t, c, check), f"{src} -> {dst}", pred, x_t, c, check)


def _convert(pred: Tensor, src: str, dst: str, x_t: Tensor, c: PathCoefficients, check: bool) -> Tensor:
    # Direct forms that avoid dividing by a coefficient the (x0, eps) route would need.
    if src == "noise" and dst == "score":
        return -pred / _nonzero(c.sigma, "noise -> score (divides by sigma)", c, check)
    if src == "score" and dst == "noise":
        return -c.sigma * pred
    if src == "noise" and dst == "velocity":
        # v = (alpha' x_t + (sigma' alpha - alpha' sigma) eps) / alpha: needs alpha != 0 and a finite sigma'.
        a = _nonzero(c.alpha, "noise -> velocity (divides by alpha)", c, check)
        ds = _finite(c.d_sigma, "noise -> velocity (sigma' eps)", c, check)
        return (c.d_alpha * x_t + (ds * a - c.d_alpha * c.sigma) * pred) / a
    if src == "score" and dst == "velocity":
        # v = alpha'/alpha x_t - lambda s = (alpha' x_t - (alpha sigma sigma' - alpha' sigma^2) s) / alpha (eq. 9)
        a = _nonzero(c.alpha, "score -> velocity (divides by alpha)", c, check)
        return (c.d_alpha * x_t - _score_den(c) * pred) / a
    if src == "velocity" and dst == "noise":
        det = _nonzero(c.alpha * c.d_sigma - c.sigma * c.d_alpha, "velocity conversion (det)", c, check)
        return (c.alpha * pred - c.d_alpha * x_t) / det
    if src == "velocity" and dst == "score":
        # s = (alpha' x_t - alpha v) / (alpha lambda): SiT eq. 9 solved for s; 0 / 0 where lambda = 0 (t = 0
        # of linear/GVP), finite at VP t = 0 (lambda = beta_min / 2).
        den = _nonzero(_score_den(c), "velocity -> score (divides by alpha lambda)", c, check)
        return (c.d_alpha * x_t - c.alpha * pred) / den
    x0, eps = to_x0_eps(src, pred, x_t, c, check)
    return from_x0_eps(dst, x0, eps, c, check)
