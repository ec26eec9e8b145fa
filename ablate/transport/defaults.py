"""One table of endpoint epsilons, keyed by interpolant x prediction, and the time intervals
they imply for training and sampling. Paper time: t = 0 data, t = 1 noise; samplers go from t_max down to
t_min.

SiT's defaults (its ``create_transport`` and ``check_interval``, converted to paper time):

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

from dataclasses import dataclass

from .interpolants import INTERPOLANTS
from .predictions import validate_prediction

__all__ = ["EndpointEps", "endpoint_eps", "train_interval", "sample_interval", "SDE_SINGULAR_NOISE_EPS"]

SDE_SINGULAR_NOISE_EPS = 1e-3


@dataclass(frozen=True)
class EndpointEps:
    train: float
    sample: float


def endpoint_eps(interpolant: str, prediction: str) -> EndpointEps:
    """SiT's default endpoint epsilons for an (interpolant, prediction) pair."""
    validate_prediction(prediction)
    if interpolant == "vp":
        return EndpointEps(train=1e-5, sample=1e-3)
    if interpolant in ("linear", "gvp"):
        return EndpointEps(0.0, 0.0) if prediction == "velocity" else EndpointEps(1e-3, 1e-3)
    if interpolant in INTERPOLANTS:  # pragma: no cover - the table must cover every registered interpolant
        raise AssertionError(f"endpoint table misses interpolant {interpolant!r}")
    # A user-defined interpolant: conservative defaults on both ends.
    return EndpointEps(1e-3, 1e-3)


def _check_eps(eps: float, what: str) -> float:
    eps = float(eps)
    if not 0.0 <= eps < 0.5:
        raise ValueError(f"{what}={eps!r} is outside [0, 0.5)")
    return eps


def train_interval(interpolant: str, prediction: str, eps: float | None = None) -> tuple[float, float]:
    """(t_min, t_max) of the uniform training-time density, in paper time."""
    e = _check_eps(endpoint_eps(interpolant, prediction).train if eps is None else eps, "train_eps")
    if interpolant == "vp":
        return (e, 1.0)
    return (e, 1.0 - e)


def sample_interval(
    interpolant: str,
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
    e = _check_eps(endpoint_eps(interpolant, prediction).sample if eps is None else eps, "sample_eps")
    last = _check_eps(last_step_size, "last_step_size")
    if interpolant == "vp":
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
