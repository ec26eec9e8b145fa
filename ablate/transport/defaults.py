"""Endpoint epsilons per interpolant x prediction, and the time intervals they imply for training and sampling.
Paper time: t = 0 data, t = 1 noise; samplers go from t_max down to t_min.

Each interpolant owns its row of the table (:meth:`Interpolant.endpoint_eps`; a new interpolant class inherits
conservative defaults, 1e-3 at both ends, unless it states its own). Whether an interval is open at the noise end
follows from the path itself (:meth:`Interpolant.alpha_vanishes_at_noise_end`: alpha_1 = 0 makes the score
0/0 there). SiT's defaults (its ``create_transport`` and ``check_interval``, converted to paper time):

=============  ===========================  =========  ==========
interpolant    prediction                   train eps  sample eps
=============  ===========================  =========  ==========
vp             any                          1e-5       1e-3
linear, gvp    noise, score, x0             1e-3       1e-3
linear, gvp    velocity                     0          0
=============  ===========================  =========  ==========

Intervals (eps = the table's value unless the user overrides it):

- training, uniform density: vp [eps, 1]; linear/gvp non-velocity [eps, 1 - eps]; velocity [0, 1].
- ODE sampling: the same shape with the sample eps.
- SDE sampling: the data end is ``last_step_size`` when a last step is taken, else eps; the noise end is
  1 - eps for linear/gvp when the prediction is not velocity or the diffusion coefficient is infinite at t = 1
  (w_KL on linear/gvp). Where SiT's own table gives eps = 0 for that case (velocity + w_KL on linear/gvp: its
  code evaluates w_KL(1) = inf and returns NaN), ablate uses ``SDE_SINGULAR_NOISE_EPS`` instead.
"""

from __future__ import annotations

from .interpolants import EndpointEps, Interpolant, get_interpolant
from .predictions import validate_prediction

__all__ = ["EndpointEps", "endpoint_eps", "train_interval", "sample_interval", "SDE_SINGULAR_NOISE_EPS"]

SDE_SINGULAR_NOISE_EPS = 1e-3


def _interp(interpolant: str | Interpolant) -> Interpolant:
    return get_interpolant(interpolant) if isinstance(interpolant, str) else interpolant


def endpoint_eps(interpolant: str | Interpolant, prediction: str) -> EndpointEps:
    """The default endpoint epsilons of an (interpolant, prediction) pair: the interpolant's own
    (:meth:`Interpolant.endpoint_eps`)."""
    validate_prediction(prediction)
    return _interp(interpolant).endpoint_eps(prediction)


def _check_eps(eps: float, what: str) -> float:
    eps = float(eps)
    if not 0.0 <= eps < 0.5:
        raise ValueError(f"{what}={eps!r} is outside [0, 0.5)")
    return eps


def train_interval(interpolant: str | Interpolant, prediction: str, eps: float | None = None) -> tuple[float, float]:
    """(t_min, t_max) of the uniform training-time density, in paper time."""
    interp = _interp(interpolant)
    e = _check_eps(endpoint_eps(interp, prediction).train if eps is None else eps, "train_eps")
    if not interp.alpha_vanishes_at_noise_end():  # e.g. VP: nothing is singular at t = 1
        return (e, 1.0)
    return (e, 1.0 - e)


def sample_interval(
    interpolant: str | Interpolant,
    prediction: str,
    sde: bool = False,
    *,
    noise_singular: bool = False,
    last_step_size: float = 0.0,
    eps: float | None = None,
) -> tuple[float, float]:
    """(t_min, t_max) for sampling, in paper time: integrate from t_max (noise side) to t_min (data side).

    ``noise_singular``: the SDE diffusion coefficient is infinite at t = 1 (w_KL on linear/gvp).
    ``last_step_size``: the SDE stops at t = last_step_size and a separate last step goes to 0 (0 = none).
    """
    interp = _interp(interpolant)
    e = _check_eps(endpoint_eps(interp, prediction).sample if eps is None else eps, "sample_eps")
    last = _check_eps(last_step_size, "last_step_size")
    if not interp.alpha_vanishes_at_noise_end():  # e.g. VP
        t_min = last if (sde and last > 0) else e
        return (t_min, 1.0)
    velocity = prediction == "velocity"
    if not sde:
        return (0.0, 1.0) if velocity else (e, 1.0 - e)
    t_min = last if last > 0 else e
    if not velocity or noise_singular:
        noise_eps = e if (e > 0 or not noise_singular) else SDE_SINGULAR_NOISE_EPS
        return (t_min, 1.0 - noise_eps)
    return (t_min, 1.0)
