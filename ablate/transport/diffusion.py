"""SDE diffusion coefficients w_t (the SiT *paper's* w), chosen at sampling time, never at training time.

The reverse-time SDE of SiT (arXiv 2401.08740, eq. 4), paper time (t = 0 data, t = 1 noise), integrated from
t = 1 down to t = 0:

.. math::
    dX_t = \\big[v(X_t, t) - \\tfrac12 w_t\\, s(X_t, t)\\big] dt + \\sqrt{w_t}\\, d\\bar W_t

Any w_t >= 0 gives the same marginals as the probability-flow ODE (w = 0). Each coefficient below carries a
norm multiplier ``norm`` (SiT's ``diffusion_norm``) and gives its formula in its docstring.

The SiT *repository* uses its own time s = 1 - t and a coefficient D_s with noise sqrt(2 D): the paper's
w_t = 2 D_{1-t}. :func:`from_sit` reproduces its ``compute_diffusion`` forms exactly under that mapping.

Endpoints: w_KL = 2 lambda_t is +inf at t = 1 for linear and GVP (alpha_1 = 0). Such coefficients report
``singular_at_noise_end = True`` and refuse t = 1 with :class:`EndpointError`, so the sampler asks
:func:`ablate.transport.defaults.sample_interval` for ``noise_singular=True`` and starts at 1 - eps.
At the data end the drift's term w s / 2 = -(w / sigma) eps_hat / 2 is 0 * inf where w = sigma = 0;
:meth:`Diffusion.w_over_sigma` gives the finite limit of w / sigma there (e.g. w_KL / sigma -> 2 on linear,
pi on GVP), so the SDE drift at t = 0 is the limit of the drift, not v.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .interpolants import Interpolant
from .loss_curve import LossCurve, estimate_loss_curve
from .predictions import EndpointError

__all__ = [
    "Diffusion",
    "WKL",
    "Sigma",
    "Sin2",
    "Constant",
    "LinearW",
    "Decreasing",
    "WKLEta",
    "SiTDiffusion",
    "LossCurve",
    "estimate_loss_curve",
    "DIFFUSIONS",
    "SIT_FORMS",
    "get_diffusion",
    "from_sit",
]


def _t(t) -> Tensor:
    t = torch.as_tensor(t)
    return t if t.is_floating_point() else t.to(torch.get_default_dtype())


DIFFUSIONS: dict[str, type["Diffusion"]] = {}  # filled by every subclass that sets ``name`` (the registry)


def _sin_pi(t: Tensor) -> Tensor:
    """sin(pi t) through sin(pi min(t, 1 - t)): exactly 0 at both ends (sin(pi) is 1.2e-16 in floating point)."""
    return torch.sin(math.pi * torch.minimum(t, 1 - t))


class Diffusion:
    """Base class: ``w(t)`` returns the paper's w_t (>= 0) with the shape and dtype of t (paper time).

    A subclass that sets ``name`` registers itself under that name (:data:`DIFFUSIONS`, what
    :func:`get_diffusion` and the ``sde_coef`` config group resolve). ``needs_loss_curve``: the coefficient
    depends on the trained model's per-time loss L_t, which the evaluation estimates and passes as ``loss``.
    """

    name = "diffusion"
    singular_at_noise_end = False
    needs_loss_curve = False

    def __init_subclass__(cls, register: bool = True, **kwargs):
        super().__init_subclass__(**kwargs)
        if register and "name" in cls.__dict__:
            taken = DIFFUSIONS.get(cls.name)
            if taken is not None and taken.__qualname__ != cls.__qualname__:
                raise ValueError(f"SDE coefficient name {cls.name!r} is taken by {taken.__qualname__}")
            DIFFUSIONS[cls.name] = cls

    def describe(self) -> dict:
        """The coefficient's identity: name and parameters (results rows, W&B config)."""
        return {"name": self.name, "norm": self.norm}

    def __init__(self, interpolant: Interpolant, norm: float = 1.0):
        norm = float(norm)
        if not (norm >= 0 and math.isfinite(norm)):
            raise ValueError(f"diffusion norm must be a finite number >= 0, got {norm!r}")
        self.interpolant = interpolant
        self.norm = norm

    def w(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def w_over_sigma(self, t) -> Tensor:
        """w_t / sigma_t, and its limit where sigma_t = 0 (the data end): +inf where w > 0 there, else the
        class's closed form (:meth:`_ratio_at_sigma_zero`). The SDE drift needs it at t = 0, where
        w s / 2 = -(w / sigma) eps_hat / 2 with eps_hat finite."""
        t = _t(t)
        w, sigma = self(t), self.interpolant.sigma(t)
        zero = sigma == 0
        if not bool(zero.any()):
            return w / sigma
        lim = torch.where(w > 0, torch.full_like(w, math.inf), self._ratio_at_sigma_zero(t, w))
        return torch.where(zero, lim, w / torch.where(zero, torch.ones_like(sigma), sigma))

    def _ratio_at_sigma_zero(self, t: Tensor, w: Tensor) -> Tensor:
        """lim w / sigma where w = sigma = 0; a coefficient without a known limit raises."""
        raise EndpointError(
            f"diffusion {self.name!r}: the limit of w / sigma where both vanish is not known; override "
            "Diffusion._ratio_at_sigma_zero, or keep the SDE grid off t = 0 (sample_eps / last_step)"
        )

    def __call__(self, t, check: bool = True) -> Tensor:
        t = _t(t)
        if check and self.singular_at_noise_end and bool((t >= 1).any()):
            raise EndpointError(
                f"diffusion {self.name!r} is infinite at t = 1 for interpolant {self.interpolant.name!r}: "
                "start the SDE at 1 - eps (sample_interval(..., noise_singular=True))"
            )
        return self.w(t)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(interpolant={self.interpolant!r}, norm={self.norm})"


class WKL(Diffusion):
    """w_t = norm * w_KL, w_KL = 2 lambda_t = 2 (sigma'_t sigma_t - alpha'_t sigma_t^2 / alpha_t) (SiT eq.
    13).

    The coefficient that minimises the KL bound between the data and the SDE's samples for a score error (SiT
    Sec. 2.4; Albergo et al. 2023); for VP it is beta(t), the DDPM SDE. Infinite at t = 1 where alpha_1 = 0.
    """

    name = "w_kl"

    def __init__(self, interpolant, norm=1.0):
        super().__init__(interpolant, norm)
        self.singular_at_noise_end = interpolant.alpha_vanishes_at_noise_end()

    def w(self, t):
        return self.norm * 2 * self.interpolant.lambda_(t)

    def _ratio_at_sigma_zero(self, t, w):
        return self.norm * 2 * _lambda_over_sigma(self.interpolant, t)


def _lambda_over_sigma(interpolant: Interpolant, t: Tensor) -> Tensor:
    """lambda_t / sigma_t = sigma' - (alpha'/alpha) sigma: 1 (linear), pi/2 (GVP), +inf (VP) at t = 0."""
    return interpolant.d_sigma(t) - interpolant.d_log_alpha(t) * interpolant.sigma(t)


class _Vanishing(Diffusion):
    """A coefficient that is O(t^2) at t = 0, faster than sigma (O(t), or O(sqrt t) for VP): w / sigma -> 0."""

    def _ratio_at_sigma_zero(self, t, w):
        return torch.zeros_like(w)


class Sigma(Diffusion):
    """w_t = norm * sigma_t (SiT Table 6 column "sigma_t")."""

    name = "sigma"

    def w(self, t):
        return self.norm * self.interpolant.sigma(t)

    def _ratio_at_sigma_zero(self, t, w):
        return torch.full_like(w, self.norm)


class Sin2(_Vanishing):
    """w_t = norm * sin^2(pi t) (SiT Table 6 column "sin^2(pi t)"; SiT code "increasing-decreasing")."""

    name = "sin2"

    def w(self, t):
        return self.norm * _sin_pi(t) ** 2


class Constant(_Vanishing):  # w / sigma is +inf at t = 0 unless norm = 0
    """w_t = norm (constant)."""

    name = "constant"

    def w(self, t):
        return torch.full_like(t, self.norm)


class LinearW(Diffusion):
    """w_t = norm * t: largest at the noise end, decreasing linearly along the sampling direction."""

    name = "linear"

    def w(self, t):
        return self.norm * t

    def _ratio_at_sigma_zero(self, t, w):
        return self.norm / self.interpolant.d_sigma(t)  # t / sigma -> 1 / sigma'(0): 1, 2 / pi, 0 (VP)


class Decreasing(_Vanishing):
    """w_t = norm * sin^4(pi t / 2) = norm * (1 - cos(pi t))^2 / 4: 1 at the noise end, decreasing smoothly
    (flat) to 0 at the data end along the sampling direction (the shape of SiT's "decreasing" form at norm 1).
    """

    name = "decreasing"

    def w(self, t):
        return self.norm * torch.sin(0.5 * math.pi * t) ** 4


class WKLEta(Diffusion):
    """Cost-regularised w_KL,eta (SiT eq. 14; absent from the SiT code; its eta was not published):

    .. math::
        w^{KL,\\eta}_t = w^{KL}_t \\sqrt{\\frac{L_t}{L_t + 2\\eta\\, (w^{KL}_t)^2}}
                      = \\frac{2}{\\sqrt{\\lambda_t^{-2} + 8\\eta / L_t}} \\quad (\\times\\ \\text{norm})

    Source of the form: the paper's PDF could not be read offline; the main-text constant 2 is taken from a
    published review of the paper, which notes that the paper's main text (2), appendix (1) and stated
    t -> 1 limit disagree by factors of two; since eta is free, the constant only reparameterises it. The
    same form follows from the bound behind w_KL: with one velocity model, s_hat - s = -(v_hat - v) /
    lambda_t, so the SDE's drift error is (v_hat - v)(1 + w / (2 lambda)) and Girsanov bounds the KL by
    int L_t (1 + w/(2 lambda))^2 / (2 w) dt; adding eta int w_t dt (the cost of integrating a stiffer SDE)
    and minimising pointwise in w gives the formula above (tests/transport/test_diffusion.py checks it
    is the minimiser).

    eta = 0 recovers w_KL = 2 lambda_t; L_t -> 0 (a perfect model) gives w -> 0 (the ODE); at t = 1 where
    lambda = inf (linear, GVP) the limit sqrt(L_1 / (2 eta)) is finite and is taken explicitly. ``loss`` is
    L_t: a :class:`LossCurve` (e.g. from :func:`estimate_loss_curve` on held-out data), a callable of t, or
    a number; L_t and eta are per dimension (mean over dimensions, the training loss's scale).
    """

    name = "w_kl_eta"
    needs_loss_curve = True

    def __init__(self, interpolant, norm=1.0, *, eta: float = 0.0, loss=None, loss_samples: int = 256,
                 loss_knots: int = 32):
        """``loss_samples`` / ``loss_knots``: how the evaluation estimates L_t for this coefficient (that many
        training images drawn at random with a fixed seed, at that many times; :func:`estimate_loss_curve`)."""
        super().__init__(interpolant, norm)
        self.loss_samples, self.loss_knots = int(loss_samples), int(loss_knots)
        if self.loss_samples < 1 or self.loss_knots < 2:
            raise ValueError(f"w_kl_eta needs loss_samples >= 1 and loss_knots >= 2, got {loss_samples}, "
                             f"{loss_knots}")
        eta = float(eta)
        if not (eta >= 0 and math.isfinite(eta)):
            raise ValueError(f"w_kl_eta needs a finite eta >= 0, got eta={eta!r}")
        if loss is None:
            if eta > 0:
                raise ValueError(
                    "w_kl_eta with eta > 0 needs a per-time loss L_t: pass loss=LossCurve(...) "
                    "(see estimate_loss_curve) or a number"
                )
            loss = 1.0
        self.eta = eta
        self.loss = LossCurve.constant(float(loss)) if isinstance(loss, (int, float)) else loss
        self.singular_at_noise_end = eta == 0 and interpolant.alpha_vanishes_at_noise_end()

    def w(self, t):
        lam = self.interpolant.lambda_(t)
        at_noise_end = (t >= 1) & self.interpolant.alpha_vanishes_at_noise_end()
        inv_lam2 = torch.where(at_noise_end, torch.zeros_like(t), 1 / lam**2)  # lambda = 0 at t = 0 -> inf
        if self.eta == 0:
            return self.norm * 2 * lam
        return self.norm * 2 / torch.sqrt(inv_lam2 + self._cost(t))

    def _cost(self, t):
        loss = self.loss(t).to(t.dtype)
        return torch.where(loss > 0, 8 * self.eta / loss, torch.full_like(t, math.inf))

    def _ratio_at_sigma_zero(self, t, w):
        # w = 2 lambda / sqrt(1 + cost lambda^2): w / sigma -> 2 (lambda / sigma) where lambda -> 0
        ratio = self.norm * 2 * _lambda_over_sigma(self.interpolant, t)
        if self.eta == 0:
            return ratio
        cost, lam = self._cost(t), self.interpolant.lambda_(t)
        return torch.where(torch.isinf(cost), torch.zeros_like(w), ratio / torch.sqrt(1 + cost * lam**2))

    def describe(self) -> dict:
        return {"name": self.name, "norm": self.norm, "eta": self.eta}

    def __repr__(self):
        return f"WKLEta(interpolant={self.interpolant!r}, norm={self.norm}, eta={self.eta})"


class SiTDiffusion(Diffusion, register=False):
    """The SiT repository's ``compute_diffusion(form, norm)`` as the paper's w (w = 2 D, its noise sqrt(2 D)),
    with SiT's time s = 1 - t. Forms (SiT code -> paper w_t):

    - ``constant``:   D = norm                              -> w = 2 norm
    - ``SBDM``:       D = norm (alpha'/alpha sigma^2 - sigma sigma')(s) = norm lambda_t  -> w = norm w_KL
    - ``sigma``:      D = norm sigma                        -> w = 2 norm sigma_t
    - ``linear``:     D = norm (1 - s)                      -> w = 2 norm t
    - ``decreasing``: D = (norm cos(pi s) + 1)^2 / 4        -> w = (1 - norm cos(pi t))^2 / 2 (norm *inside*)
    - ``increasing-decreasing`` (spelt ``inccreasing-decreasing`` in the SiT code, which made the correct
      spelling unreachable there; both spellings are accepted here): D = norm sin^2(pi s)
      -> w = 2 norm sin^2(pi t)
    """

    def __init__(self, interpolant, form: str, norm=1.0):
        super().__init__(interpolant, norm)
        if form not in SIT_FORMS:
            raise ValueError(f"unknown SiT diffusion form {form!r}; valid choices: {sorted(SIT_FORMS)}")
        self.form = SIT_FORMS[form]
        self.name = f"sit_{self.form}"
        self.singular_at_noise_end = self.form == "SBDM" and interpolant.alpha_vanishes_at_noise_end()

    def w(self, t):
        n, f = self.norm, self.form
        if f == "constant":
            return torch.full_like(t, 2 * n)
        if f == "SBDM":
            return n * 2 * self.interpolant.lambda_(t)
        if f == "sigma":
            return 2 * n * self.interpolant.sigma(t)
        if f == "linear":
            return 2 * n * t
        if f == "decreasing":
            return 0.5 * (1 - n * torch.cos(math.pi * t)) ** 2
        return 2 * n * _sin_pi(t) ** 2  # increasing-decreasing

    def _ratio_at_sigma_zero(self, t, w):
        n, f = self.norm, self.form
        if f == "SBDM":
            return n * 2 * _lambda_over_sigma(self.interpolant, t)
        if f == "sigma":
            return torch.full_like(w, 2 * n)
        if f == "linear":
            return 2 * n / self.interpolant.d_sigma(t)
        return torch.zeros_like(w)  # constant (norm 0), decreasing (norm 1: O(t^4)), increasing-decreasing

    def __repr__(self):
        return f"SiTDiffusion(form={self.form!r}, interpolant={self.interpolant!r}, norm={self.norm})"


SIT_FORMS = {
    "constant": "constant",
    "SBDM": "SBDM",
    "sigma": "sigma",
    "linear": "linear",
    "decreasing": "decreasing",
    "increasing-decreasing": "increasing-decreasing",
    "inccreasing-decreasing": "increasing-decreasing",
}



def get_diffusion(name: str | Diffusion, interpolant: Interpolant, norm: float = 1.0, **kw) -> Diffusion:
    """Build a coefficient by name (:data:`DIFFUSIONS`); ``sit:<form>`` builds :func:`from_sit` forms."""
    if isinstance(name, Diffusion):
        return name
    if isinstance(name, str) and name.startswith("sit:"):
        return from_sit(name[4:], interpolant, norm)
    if name not in DIFFUSIONS:
        raise ValueError(
            f"unknown diffusion {name!r}; valid choices: {sorted(DIFFUSIONS)} or 'sit:<form>' "
            f"with form in {sorted(SIT_FORMS)}"
        )
    return DIFFUSIONS[name](interpolant, norm, **kw)


def from_sit(form: str, interpolant: Interpolant, norm: float = 1.0) -> SiTDiffusion:
    """The SiT repository's diffusion ``form`` with its ``diffusion_norm``, as the paper's w (see
    SiTDiffusion)."""
    return SiTDiffusion(interpolant, form, norm)
