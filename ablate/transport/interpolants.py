"""Interpolants: the path x_t = alpha_t x + sigma_t eps, in the SiT paper's time (t = 0 data, t = 1 noise).

An interpolant returns coefficients and nothing else. Drift, diffusion coefficients and
prediction conversions live in their own modules and only consume :class:`PathCoefficients`.

Conventions (docs/design.md, "Conventions", SiT paper arXiv 2401.08740, Sec. 2 and Table 4):

.. math::
    x_t = \\alpha_t x_* + \\sigma_t \\varepsilon,\\qquad
    v_t = \\dot\\alpha_t x_* + \\dot\\sigma_t \\varepsilon

- ``linear``: alpha = 1 - t, sigma = t.
- ``gvp``:    alpha = cos(pi t / 2), sigma = sin(pi t / 2); alpha is computed as sin(pi (1 - t) / 2) so that
  alpha(1) is an exact 0 (``cos(pi/2)`` is 6e-17 in floating point, which would turn endpoint divisions into
  huge finite numbers).
- ``vp``:     log alpha = -1/4 t^2 (beta_max - beta_min) - 1/2 t beta_min, sigma = sqrt(1 - alpha^2)
  (SBDM-VP, the DDPM SDE; beta_min = 0.1, beta_max = 20). sigma'(0) is infinite.

The SiT *repository* runs time the other way (its t = 1 - ours); convert at the edges only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

__all__ = [
    "PathCoefficients",
    "Interpolant",
    "Linear",
    "GVP",
    "VP",
    "CustomInterpolant",
    "INTERPOLANTS",
    "get_interpolant",
    "expand_like",
]


def expand_like(c: Tensor, x: Tensor) -> Tensor:
    """Reshape a per-sample coefficient [B] (or a scalar) to broadcast against x of shape [B, ...]."""
    c = torch.as_tensor(c, dtype=x.dtype, device=x.device)
    if c.ndim == 0:
        return c
    return c.reshape(c.shape + (1,) * (x.ndim - c.ndim))


@dataclass(frozen=True)
class PathCoefficients:
    """alpha_t, sigma_t and their time derivatives (paper time), each broadcastable against t.

    ``sigma_d_sigma`` is the product sigma_t sigma'_t, finite at every end of the built-in interpolants even
    where sigma' is infinite (VP at t = 0: sigma sigma' = -alpha alpha' = alpha^2 beta / 2). The conversions
    need it to take the finite limits there (lambda_t = sigma sigma' - alpha' sigma^2 / alpha). ``None`` (a
    hand-built record) means "compute it as sigma * d_sigma".
    """

    alpha: Tensor
    sigma: Tensor
    d_alpha: Tensor
    d_sigma: Tensor
    sigma_d_sigma: Tensor | None = None

    def like(self, x: Tensor) -> "PathCoefficients":
        """The same coefficients reshaped to broadcast against a batch x of shape [B, ...] (x's dtype)."""
        coefs = (self.alpha, self.sigma, self.d_alpha, self.d_sigma)
        s_ds = None if self.sigma_d_sigma is None else expand_like(self.sigma_d_sigma, x)
        return PathCoefficients(*(expand_like(c, x) for c in coefs), s_ds)

    def s_ds(self) -> Tensor:
        """sigma_t sigma'_t: the stored finite product, else sigma * d_sigma."""
        return self.sigma * self.d_sigma if self.sigma_d_sigma is None else self.sigma_d_sigma


INTERPOLANTS: dict[str, type["Interpolant"]] = {}  # filled by every subclass that sets ``name`` (the registry)


@dataclass(frozen=True)
class EndpointEps:
    """How far from the ends training (``train``) and sampling (``sample``) stay by default."""

    train: float
    sample: float


class Interpolant:
    """Base class. Subclasses implement :meth:`alpha`, :meth:`sigma`, :meth:`d_alpha`, :meth:`d_sigma`.

    A subclass that sets ``name`` registers itself under that name (:data:`INTERPOLANTS`, what
    :func:`get_interpolant` and the ``interpolant`` config group resolve): the class is the only list entry.

    ``t`` is a float tensor (any shape) in [0, 1]; the results have the shape and dtype of ``t``.
    Override :meth:`d_log_alpha` and :meth:`lambda_` where a closed form is more accurate than the ratio.
    """

    name: str = "custom"

    def __init_subclass__(cls, register: bool = True, **kwargs):
        super().__init_subclass__(**kwargs)
        if register and "name" in cls.__dict__:
            if cls.name in INTERPOLANTS and INTERPOLANTS[cls.name].__qualname__ != cls.__qualname__:
                raise ValueError(f"interpolant name {cls.name!r} is taken by {INTERPOLANTS[cls.name].__qualname__}")
            INTERPOLANTS[cls.name] = cls

    def describe(self) -> dict:
        """The interpolant's identity (name and parameters): part of the training key and the results row."""
        return {"name": self.name}

    def endpoint_eps(self, prediction: str) -> EndpointEps:
        """Default endpoint epsilons for a network predicting ``prediction`` (the interval's ends come from
        :mod:`ablate.transport.defaults`). Conservative for a new path: 1e-3 from both ends."""
        return EndpointEps(1e-3, 1e-3)

    def alpha(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def sigma(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def d_alpha(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def d_sigma(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def __call__(self, t: Tensor) -> PathCoefficients:
        t = torch.as_tensor(t)
        if not t.is_floating_point():
            t = t.to(torch.get_default_dtype())
        return PathCoefficients(
            self.alpha(t), self.sigma(t), self.d_alpha(t), self.d_sigma(t), self.sigma_d_sigma(t)
        )

    def sigma_d_sigma(self, t: Tensor) -> Tensor:
        """sigma_t sigma'_t; override where sigma' is infinite but the product is finite (VP at t = 0)."""
        return self.sigma(t) * self.d_sigma(t)

    def d_log_alpha(self, t: Tensor) -> Tensor:
        """alpha'_t / alpha_t (infinite where alpha_t = 0)."""
        return self.d_alpha(t) / self.alpha(t)

    def lambda_(self, t: Tensor) -> Tensor:
        """lambda_t = sigma_t sigma'_t - alpha'_t sigma_t^2 / alpha_t  (SiT paper eq. 9 denominator).

        It links velocity and score, v = (alpha'/alpha) x_t - lambda_t s, and gives w_KL = 2 lambda_t.
        """
        s = self.sigma(t)
        return s * self.d_sigma(t) - self.d_log_alpha(t) * s * s

    def interpolate(self, x: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """x_t = alpha_t x + sigma_t eps for a batch (t of shape [B])."""
        c = self(t).like(x)
        return c.alpha * x + c.sigma * eps

    def velocity(self, x: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """The conditional velocity d x_t / dt = alpha'_t x + sigma'_t eps."""
        c = self(t).like(x)
        return c.d_alpha * x + c.d_sigma * eps

    # Where the path touches a pure end: used by callers to refuse 0/0 explicitly.
    def alpha_vanishes_at_noise_end(self) -> bool:
        return bool(self.alpha(torch.tensor(1.0, dtype=torch.float64)) == 0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Linear(Interpolant):
    """alpha_t = 1 - t, sigma_t = t (SiT "Linear", rectified flow)."""

    name = "linear"

    def endpoint_eps(self, prediction: str) -> EndpointEps:
        return EndpointEps(0.0, 0.0) if prediction == "velocity" else EndpointEps(1e-3, 1e-3)  # SiT's table

    def alpha(self, t):
        return 1 - t

    def sigma(self, t):
        return t.clone()

    def d_alpha(self, t):
        return torch.full_like(t, -1.0)

    def d_sigma(self, t):
        return torch.ones_like(t)

    def lambda_(self, t):
        # t + t^2 / (1 - t) = t / (1 - t); +inf at t = 1.
        return t / (1 - t)


class GVP(Interpolant):
    """alpha_t = cos(pi t / 2), sigma_t = sin(pi t / 2) (SiT "GVP": alpha^2 + sigma^2 = 1).

    alpha and sigma' are evaluated through sin(pi (1 - t) / 2), so alpha(1) = sigma'(1) = 0 exactly.
    """

    name = "gvp"

    def endpoint_eps(self, prediction: str) -> EndpointEps:
        return EndpointEps(0.0, 0.0) if prediction == "velocity" else EndpointEps(1e-3, 1e-3)  # SiT's table

    def alpha(self, t):
        return torch.sin(0.5 * math.pi * (1 - t))

    def sigma(self, t):
        return torch.sin(0.5 * math.pi * t)

    def d_alpha(self, t):
        return -0.5 * math.pi * torch.sin(0.5 * math.pi * t)

    def d_sigma(self, t):
        return 0.5 * math.pi * torch.sin(0.5 * math.pi * (1 - t))

    def d_log_alpha(self, t):
        return -0.5 * math.pi * self.sigma(t) / self.alpha(t)

    def lambda_(self, t):
        # sigma sigma' - alpha' sigma^2 / alpha = (pi / 2) tan(pi t / 2); +inf at t = 1.
        return 0.5 * math.pi * self.sigma(t) / self.alpha(t)


class VP(Interpolant):
    """SBDM-VP (the DDPM SDE): log alpha_t = -1/4 t^2 (beta_max - beta_min) - 1/2 t beta_min,
    sigma_t = sqrt(1 - alpha_t^2). alpha(1) ~ 0.0066 (not exactly Gaussian at the noise end), sigma'(0) = inf.

    sigma is computed as sqrt(-expm1(2 log alpha)) for accuracy near t = 0.
    """

    name = "vp"

    def endpoint_eps(self, prediction: str) -> EndpointEps:
        return EndpointEps(train=1e-5, sample=1e-3)  # SiT's table, for every prediction

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        if not (0 <= beta_min < beta_max):
            raise ValueError(
                f"VP needs 0 <= beta_min < beta_max, got beta_min={beta_min}, beta_max={beta_max}"
            )
        self.beta_min = float(beta_min)
        self.beta_max = float(beta_max)

    def describe(self) -> dict:
        return {"name": self.name, "beta_min": self.beta_min, "beta_max": self.beta_max}

    def log_alpha(self, t):
        return -0.25 * t * t * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def beta(self, t):
        """beta(t) = beta_min + t (beta_max - beta_min) = -2 d log alpha / dt."""
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def alpha(self, t):
        return torch.exp(self.log_alpha(t))

    def sigma(self, t):
        return torch.sqrt(-torch.expm1(2 * self.log_alpha(t)))

    def d_log_alpha(self, t):
        return -0.5 * self.beta(t)

    def d_alpha(self, t):
        return self.alpha(t) * self.d_log_alpha(t)

    def d_sigma(self, t):
        # sigma sigma' = -alpha alpha'  =>  sigma' = alpha^2 beta / (2 sigma); +inf at t = 0.
        a = self.alpha(t)
        return 0.5 * a * a * self.beta(t) / self.sigma(t)

    def sigma_d_sigma(self, t):
        # sigma sigma' = -alpha alpha' = alpha^2 beta / 2 (from alpha^2 + sigma^2 = 1): 0.05 at t = 0, not 0 inf.
        a = self.alpha(t)
        return 0.5 * a * a * self.beta(t)

    def lambda_(self, t):
        # sigma sigma' - alpha' sigma^2 / alpha = -(alpha'/alpha)(alpha^2 + sigma^2) = beta(t) / 2: finite.
        return 0.5 * self.beta(t)

    def __repr__(self):
        return f"VP(beta_min={self.beta_min}, beta_max={self.beta_max})"


class CustomInterpolant(Interpolant, register=False):
    """Any user-defined pair (alpha_t, sigma_t), given as elementwise torch functions of paper time t.

    Derivatives default to forward-mode autodiff (``torch.func.jvp``) and can be given in closed form.
    Example: ``CustomInterpolant(lambda t: 1 - t**2, lambda t: t)``.
    """

    def __init__(
        self,
        alpha: Callable[[Tensor], Tensor],
        sigma: Callable[[Tensor], Tensor],
        d_alpha: Callable[[Tensor], Tensor] | None = None,
        d_sigma: Callable[[Tensor], Tensor] | None = None,
        name: str = "custom",
    ):
        self._alpha, self._sigma, self._d_alpha, self._d_sigma = alpha, sigma, d_alpha, d_sigma
        self.name = name

    @staticmethod
    def _derivative(f, t):
        return torch.func.jvp(f, (t,), (torch.ones_like(t),))[1]

    def alpha(self, t):
        return self._alpha(t)

    def sigma(self, t):
        return self._sigma(t)

    def d_alpha(self, t):
        return self._d_alpha(t) if self._d_alpha is not None else self._derivative(self._alpha, t)

    def d_sigma(self, t):
        return self._d_sigma(t) if self._d_sigma is not None else self._derivative(self._sigma, t)

    def __repr__(self):
        return f"CustomInterpolant(name={self.name!r})"


def get_interpolant(name: str | Interpolant, **kwargs) -> Interpolant:
    """Build an interpolant by name (``linear``, ``gvp``, ``vp``); an Interpolant instance passes through."""
    if isinstance(name, Interpolant):
        return name
    try:
        cls = INTERPOLANTS[name]
    except KeyError:
        raise ValueError(f"unknown interpolant {name!r}; valid choices: {sorted(INTERPOLANTS)}") from None
    return cls(**kwargs)
