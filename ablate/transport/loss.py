"""The training objective in three parts: the regression target, the weighting w(t), and the
training-time density p(t). Paper time throughout: t = 0 data, t = 1 noise, x_t = alpha_t x0 + sigma_t eps.

Per-sample losses (SiT paper arXiv 2401.08740, eqs. 6-8; ``mean_flat`` = mean over non-batch dimensions):

- ``velocity``: L_v = mean_flat((v_hat - v)^2),  v = alpha'_t x0 + sigma'_t eps               (eq. 6)
- ``score``:    L_s = mean_flat(w_t (sigma_t s_hat + eps)^2)                                   (eq. 7)
- ``noise``:    L_n = mean_flat(w_t (eps_hat - eps)^2)                                         (eq. 8)
- ``x0``:       L_x = mean_flat((x0_hat - x0)^2) with weighting ``none``; with a weighting, the
  noise-space error it implies, eps_hat - eps = -(alpha_t / sigma_t)(x0_hat - x0), so
  L_x = mean_flat(w_t (alpha_t / sigma_t)^2 (x0_hat - x0)^2): the same weighted objective as ``noise``.

Weightings (for score/noise/x0 models; lambda_t = sigma_t sigma'_t - alpha'_t sigma_t^2 / alpha_t, the
:meth:`Interpolant.lambda_` coefficient of SiT eq. 9, so that w_KL = 2 lambda_t):

- ``none``:       w_t = 1
- ``velocity``:   w_t = (lambda_t / sigma_t)^2: makes L_s equal to the velocity error of the implied velocity
  (the paper's "lambda_t^2" weighting of ||s_hat - s||^2, since sigma s_hat + eps = sigma (s_hat - s_cond)).
- ``likelihood``: w_t = lambda_t / sigma_t^2 = w_KL / (2 sigma_t^2): the ELBO weighting of the score error
  ||s_hat - s||^2 (Song et al. 2021, "Maximum likelihood training of score-based diffusion models", Thm. 1).

In the SiT repository's reversed time (its t = 1 - ours) its ``compute_drift`` returns
drift_var = (alpha_dot/alpha) sigma^2 - sigma sigma_dot with dots in its time; both derivatives flip sign
under t -> 1 - t, so drift_var equals our lambda_t and its weights (drift_var / sigma)^2 and
drift_var / sigma^2 are the ones above.
A weighting with velocity prediction has no meaning in SiT and is refused here.

Time densities: :class:`UniformTime` on [t_min, t_max] (SiT's default, with the endpoint eps of
:mod:`ablate.transport.defaults`), and :class:`LogitNormalTime` (Esser et al. 2024, "Scaling rectified flow
transformers", Sec. 3.1: t = sigmoid(m + s u), u ~ N(0, 1)), rescaled into [t_min, t_max].
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .defaults import train_interval
from .interpolants import Interpolant, expand_like, get_interpolant
from .predictions import validate_prediction

__all__ = [
    "WEIGHTINGS",
    "TIME_DENSITIES",
    "validate_weighting",
    "UniformTime",
    "LogitNormalTime",
    "Objective",
    "build_objective",
    "loss_weight",
    "prediction_weight",
    "mean_flat",
]

WEIGHTINGS = ("none", "velocity", "likelihood")


def mean_flat(x: Tensor) -> Tensor:
    """Mean over every dimension but the first (batch) one."""
    return x.mean(dim=tuple(range(1, x.ndim))) if x.ndim > 1 else x


def _check_interval(t_min: float, t_max: float) -> tuple[float, float]:
    t_min, t_max = float(t_min), float(t_max)
    if not 0.0 <= t_min < t_max <= 1.0:
        raise ValueError(f"time density needs 0 <= t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}")
    return t_min, t_max


class UniformTime:
    """t ~ U[t_min, t_max], drawn as t_min + (t_max - t_min) u, u = torch.rand (as in SiT's training)."""

    name = "uniform"

    def __init__(self, t_min: float = 0.0, t_max: float = 1.0):
        self.t_min, self.t_max = _check_interval(t_min, t_max)

    def sample(self, n: int, *, generator=None, device=None, dtype=None) -> Tensor:
        u = torch.rand(n, generator=generator, device=device, dtype=dtype)
        return u * (self.t_max - self.t_min) + self.t_min

    def describe(self) -> dict:
        return {"name": self.name, "t_min": self.t_min, "t_max": self.t_max}

    def __repr__(self):
        return f"UniformTime(t_min={self.t_min}, t_max={self.t_max})"


class LogitNormalTime:
    """t = t_min + (t_max - t_min) sigmoid(mean + std u), u ~ N(0, 1) (Esser et al. 2024, Sec. 3.1).

    Rescaling into [t_min, t_max] keeps the endpoint eps of the defaults table: a float32 sigmoid rounds to
    exactly 1 for arguments above ~17, which would otherwise put t on the endpoint.
    """

    name = "logit_normal"

    def __init__(self, mean: float = 0.0, std: float = 1.0, t_min: float = 0.0, t_max: float = 1.0):
        if not std > 0:
            raise ValueError(f"LogitNormalTime needs std > 0, got std={std}")
        self.mean, self.std = float(mean), float(std)
        self.t_min, self.t_max = _check_interval(t_min, t_max)

    def sample(self, n: int, *, generator=None, device=None, dtype=None) -> Tensor:
        u = torch.randn(n, generator=generator, device=device, dtype=dtype)
        return torch.sigmoid(self.mean + self.std * u) * (self.t_max - self.t_min) + self.t_min

    def describe(self) -> dict:
        return {"name": self.name, "mean": self.mean, "std": self.std, "t_min": self.t_min, "t_max": self.t_max}

    def __repr__(self):
        return f"LogitNormalTime(mean={self.mean}, std={self.std}, t_min={self.t_min}, t_max={self.t_max})"


_DENSITIES = {c.name: c for c in (UniformTime, LogitNormalTime)}  # the training-time densities, by name
TIME_DENSITIES = tuple(_DENSITIES)


def validate_weighting(name: str) -> str:
    """``name`` if it is a weighting of :data:`WEIGHTINGS` (the ``weighting`` config group's target)."""
    if name not in WEIGHTINGS:
        raise ValueError(f"weighting={name!r} is not valid; valid choices: {list(WEIGHTINGS)}")
    return name


def loss_weight(interpolant: Interpolant, weighting: str, t: Tensor) -> Tensor:
    """w_t of the weighted score/noise loss (module docstring): 1, (lambda/sigma)^2 or lambda/sigma^2.

    Written with lambda_t / sigma_t = sigma'_t - (alpha'_t / alpha_t) sigma_t, which has the finite limit at
    the data end of linear (1) and GVP (pi/2) where lambda / sigma is 0/0; the other ends are +inf (table in
    README.md), never NaN.
    """
    if weighting == "none":
        return torch.ones_like(t)
    if weighting == "velocity":
        return _lambda_over_sigma(interpolant, t) ** 2
    if weighting == "likelihood":
        return _lambda_over_sigma(interpolant, t) / interpolant.sigma(t)
    raise ValueError(f"unknown weighting {weighting!r}; valid choices: {list(WEIGHTINGS)}")


def _lambda_over_sigma(interpolant: Interpolant, t: Tensor) -> Tensor:
    """lambda_t / sigma_t = sigma' - (alpha'/alpha) sigma (both terms >= 0: no cancellation)."""
    return interpolant.d_sigma(t) - interpolant.d_log_alpha(t) * interpolant.sigma(t)


def prediction_weight(interpolant: Interpolant, prediction: str, weighting: str, t: Tensor) -> Tensor:
    """The weight on the squared error of ``prediction`` (what :meth:`Objective.loss` multiplies by).

    noise/score: :func:`loss_weight`. x0 with a weighting: w_t (alpha_t / sigma_t)^2, evaluated as
    (det / sigma)^2 (``velocity``) and det alpha / sigma^3 (``likelihood``) with det = alpha sigma' -
    sigma alpha' = alpha lambda / sigma, so that the finite limits at the noise end of linear/GVP (velocity:
    1 and (pi/2)^2; likelihood: 0) come out exactly instead of inf * 0. ``none`` (and velocity): 1.
    """
    validate_prediction(prediction)
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; valid choices: {list(WEIGHTINGS)}")
    if prediction == "velocity" and weighting != "none":
        raise ValueError("the velocity loss is unweighted (SiT eq. 6): use weighting='none'")
    if prediction != "x0" or weighting == "none":
        return loss_weight(interpolant, weighting, t)
    c = interpolant(t)
    det = c.alpha * c.d_sigma - c.sigma * c.d_alpha  # +inf at VP t = 0 (sigma' = inf), never NaN
    if weighting == "velocity":
        return (det / c.sigma) ** 2
    return det * c.alpha / c.sigma**3


class Objective:
    """One training objective: target (``prediction``), weighting w(t), time density p(t).

    ``model(x_t, t, y)`` receives paper time t as a float tensor [B] (wrap it with
    :mod:`ablate.transport.time` to feed another scale) and returns the prediction of type ``prediction``.
    """

    def __init__(
        self,
        interpolant: str | Interpolant,
        prediction: str,
        weighting: str = "none",
        time_density=None,
        train_eps: float | None = None,
    ):
        self.interpolant = get_interpolant(interpolant)
        self.prediction = validate_prediction(prediction)
        if weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {weighting!r}; valid choices: {list(WEIGHTINGS)}")
        if prediction == "velocity" and weighting != "none":
            raise ValueError(
                f"weighting={weighting!r} applies to score/noise/x0 predictions; the velocity loss is "
                "unweighted (SiT eq. 6): use weighting='none' with prediction='velocity'"
            )
        self.weighting = weighting
        if time_density is None:
            self.time_density = UniformTime(*train_interval(self.interpolant, prediction, train_eps))
        elif train_eps is not None:
            raise ValueError("give either time_density (with its own t_min/t_max) or train_eps, not both")
        else:
            self.time_density = time_density
        self._check_support()

    def _check_support(self):
        """Refuse, at build time, a density reaching an endpoint where the weight is inf or 0/0."""
        lo, hi = getattr(self.time_density, "t_min", None), getattr(self.time_density, "t_max", None)
        if lo is None or hi is None:
            return
        ends = torch.tensor([lo, hi], dtype=torch.float64)
        w = self._weight(ends)
        if not bool(torch.isfinite(w).all()):
            raise ValueError(
                f"the loss weight of prediction={self.prediction!r}, weighting={self.weighting!r} on "
                f"interpolant {self.interpolant.name!r} is not finite at t in {[lo, hi]} "
                f"(values {w.tolist()}): "
                "keep the time density off that endpoint (train_eps > 0, or t_min/t_max)"
            )

    def weight(self, t: Tensor) -> Tensor:
        """The weight of this objective's squared error at t (:func:`prediction_weight`)."""
        return prediction_weight(self.interpolant, self.prediction, self.weighting, t)

    _weight = weight  # the former private name

    def loss(
        self,
        model: Callable,
        x0: Tensor,
        y=None,
        *,
        t: Tensor | None = None,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict:
        """Per-sample loss at data x0. Draws noise, then t (SiT's order), unless given.

        Returns ``dict(loss=[B], t=[B], pred=model output, target=regression target)``; for ``score`` the
        loss is evaluated as (sigma s_hat + eps)^2 (SiT's form, finite at sigma = 0); target = -eps/sigma.
        """
        B = x0.shape[0]
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        if noise.shape != x0.shape:
            raise ValueError(f"noise shape {tuple(noise.shape)} != data shape {tuple(x0.shape)}")
        if t is None:
            t = self.time_density.sample(B, generator=generator, device=x0.device, dtype=x0.dtype)
        t = torch.as_tensor(t, device=x0.device, dtype=x0.dtype).expand(B)
        c = self.interpolant(t).like(x0)
        x_t = c.alpha * x0 + c.sigma * noise
        pred = model(x_t, t, y)
        if pred.shape != x0.shape:
            raise ValueError(f"model output shape {tuple(pred.shape)} != data shape {tuple(x0.shape)}")
        if self.prediction == "velocity":
            target = c.d_alpha * x0 + c.d_sigma * noise
            return dict(loss=mean_flat((pred - target) ** 2), t=t, pred=pred, target=target)
        w = expand_like(self._weight(t), x0)
        if self.prediction == "noise":
            target, err = noise, pred - noise
        elif self.prediction == "score":
            target, err = -noise / c.sigma, c.sigma * pred + noise
        else:  # x0
            target, err = x0, pred - x0
        return dict(loss=mean_flat(w * err**2), t=t, pred=pred, target=target)

    def __repr__(self):
        return (
            f"Objective({self.interpolant!r}, prediction={self.prediction!r}, weighting={self.weighting!r}, "
            f"time_density={self.time_density!r})"
        )


def build_objective(
    interpolant: str | Interpolant,
    prediction: str,
    weighting: str = "none",
    time_density="uniform",
    train_eps: float | None = None,
    **density_kw,
) -> Objective:
    """Build an :class:`Objective` from names. The density's [t_min, t_max] defaults to the training interval
    of the endpoint table (``defaults.train_interval``); ``density_kw`` (``mean``, ``std``, ``t_min``, ...)
    override it. ``time_density``: a name of :data:`TIME_DENSITIES`, or a density class (or a
    ``functools.partial`` of one, as the ``time_density`` config group builds) that takes ``t_min``/``t_max``."""
    interp = get_interpolant(interpolant)
    validate_prediction(prediction)
    if isinstance(time_density, str):
        if time_density not in _DENSITIES:
            raise ValueError(f"time_density={time_density!r} is not valid; valid choices: {list(TIME_DENSITIES)}")
        make, what = _DENSITIES[time_density], time_density
    else:
        make, what = time_density, getattr(time_density, "func", time_density)
    t_min, t_max = train_interval(interp, prediction, train_eps)
    kw = dict(t_min=t_min, t_max=t_max)
    kw.update(density_kw)
    try:
        density = make(**kw)
    except TypeError as e:
        raise ValueError(f"bad arguments {density_kw} for time density {what!r}: {e}") from None
    return Objective(interp, prediction, weighting, time_density=density)
