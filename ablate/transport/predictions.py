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

Endpoints: a conversion that divides by a coefficient that is exactly zero at the given t (sigma at the data
end for anything -> score or x0 -> noise; alpha at the noise end of linear/GVP for noise/score -> x0/velocity)
raises :class:`EndpointError` naming the conversion and t, rather than returning inf/NaN. Pass ``check=False``
to skip the check (one host sync) inside hot loops whose time grid was validated up front.
"""

from __future__ import annotations

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


def _nonzero(den: Tensor, what: str, c: PathCoefficients, check: bool) -> Tensor:
    if check and bool((den == 0).any()):
        raise EndpointError(
            f"{what} is undefined where its denominator is 0 (alpha={c.alpha.flatten()[:4].tolist()}, "
            f"sigma={c.sigma.flatten()[:4].tolist()}): move the time grid off the endpoint "
            "(the endpoint eps settings: train_eps / sample_eps)"
        )
    return den


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
        x0 = (c.d_sigma * x_t - c.sigma * pred) / det
        eps = (c.alpha * pred - c.d_alpha * x_t) / det
    else:
        validate_prediction(kind)
    return x0, eps


def from_x0_eps(kind: str, x0: Tensor, eps: Tensor, c: PathCoefficients, check: bool = True) -> Tensor:
    """The target of type ``kind`` for given (x0, eps): the regression target of the training loss."""
    if kind == "noise":
        return eps
    if kind == "x0":
        return x0
    if kind == "score":
        return -eps / _nonzero(c.sigma, "-> score (divides by sigma)", c, check)
    if kind == "velocity":
        return c.d_alpha * x0 + c.d_sigma * eps
    validate_prediction(kind)


def convert(pred: Tensor, src: str, dst: str, x_t: Tensor, c: PathCoefficients, check: bool = True) -> Tensor:
    """Convert a prediction of type ``src`` at (x_t, t) into ``dst``; ``c = interpolant(t).like(x_t)``."""
    validate_prediction(src)
    validate_prediction(dst)
    if src == dst:
        return pred
    # Direct forms that avoid dividing by a coefficient the (x0, eps) route would need.
    if src == "noise" and dst == "score":
        return -pred / _nonzero(c.sigma, "noise -> score (divides by sigma)", c, check)
    if src == "score" and dst == "noise":
        return -c.sigma * pred
    if dst == "velocity" and src in ("noise", "score"):
        # v = (alpha'/alpha) x_t + (sigma' - alpha' sigma / alpha) eps: needs alpha != 0.
        eps = pred if src == "noise" else -c.sigma * pred
        a = _nonzero(c.alpha, f"{src} -> velocity (divides by alpha)", c, check)
        return (c.d_alpha * x_t + (c.d_sigma * a - c.d_alpha * c.sigma) * eps) / a
    if src == "velocity" and dst in ("noise", "score"):
        det = _nonzero(c.alpha * c.d_sigma - c.sigma * c.d_alpha, "velocity conversion (det)", c, check)
        eps = (c.alpha * pred - c.d_alpha * x_t) / det
        if dst == "noise":
            return eps
        return -eps / _nonzero(c.sigma, "velocity -> score (divides by sigma)", c, check)
    x0, eps = to_x0_eps(src, pred, x_t, c, check)
    return from_x0_eps(dst, x0, eps, c, check)
