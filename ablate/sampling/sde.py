"""Reverse-SDE samplers with the paper's diffusion coefficient w_t (SiT eq. 4), paper time, from t_max down:

.. math::
    dX_t = \\big[v(X_t, t) - \\tfrac12 w_t\\, s(X_t, t)\\big] dt + \\sqrt{w_t}\\, d\\bar W_t

Grid (SiT's ``sde`` integrator, mapped to paper time): ``steps`` float64 points from t_max to t_min;
stochastic steps at the first ``steps - 1`` points (h_i = t_{i+1} - t_i < 0), then the last step from t_min
to 0:

- Euler-Maruyama (``em``): x_{i+1} = x_i + h_i f(x_i, t_i) + sqrt(w_{t_i} |h_i|) xi_i, f = v - w s / 2
  (1 NFE: velocity and score come from the *same* evaluation by eq. 9; the SiT code spends 2).
- stochastic Heun (``heun``, SiT's): x^ = x_i + sqrt(w_{t_i} |h_i|) xi_i, K1 = f(x^, t_i),
  K2 = f(x^ + h_i K1, t_{i+1}), x_{i+1} = x^ + h_i (K1 + K2) / 2  (2 NFE).
- last step (size ``last_step_size`` = t_min, default 0.04), no noise: ``none`` (stop at t_min = eps, 0 NFE),
  ``mean`` x - size f(x, t_min), ``euler`` x - size v(x, t_min), ``tweedie`` E[x_0 | x_{t_min}] =
  (x + sigma^2 s) / alpha (1 NFE each).

``t_min`` / ``t_max`` override the ends of the grid (e.g. to replay a given grid: ``t_min`` with
``last_step="none"`` stops there; with a last step, that step goes from t_min to 0, so ``last_step_size``
must equal t_min).

So ``steps`` counts the last step, as SiT's ``num_steps`` does: EM with 250 steps and the mean last step is
249 EM steps + 1 last step = 250 NFE. The interval comes from
:func:`ablate.transport.defaults.sample_interval` (t_max = 1 - eps where w is infinite at t = 1).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..transport.defaults import sample_interval
from ..transport.diffusion import Diffusion
from ..transport.interpolants import expand_like
from ..transport.predictions import EndpointError
from .base import BaseSampler, Field, SampleOutput, SamplingContext, steps_for_nfe
from .grids import time_grid
from .noise import step_noise_source

F64 = torch.float64

__all__ = ["SDESampler", "SDE_METHODS", "LAST_STEPS"]

SDE_METHODS = ("em", "heun")
LAST_STEPS = ("none", "mean", "tweedie", "euler")


def _nfe(method: str, steps: int, last_step: str) -> int:
    """Network evaluations of ``steps`` grid points: EM 1 and Heun 2 per stochastic step, plus the last step."""
    return (1 if method == "em" else 2) * (steps - 1) + (last_step != "none")


class SDESampler(BaseSampler):
    """Sample the reverse SDE with ``method`` and coefficient ``diffusion`` (see the module docstring)."""

    family = "sde"
    time_kind = "continuous"
    PAPER_STEPS = {m: 250 for m in SDE_METHODS}  # SiT's 250 steps, last step included: the API's default

    @classmethod
    def build(cls, ctx: SamplingContext, solver: str = "em", steps: int | None = None, nfe: int | None = 50,
              last_step: str | None = "mean", last_step_size: float = 0.04, grid: str = "uniform",
              t_min: float | None = None, t_max: float | None = None) -> "SDESampler":
        """The ``sampler=sde`` config group: ``solver`` (:data:`SDE_METHODS`), a budget of ``nfe`` network
        evaluations (EM with the mean last step: nfe steps) unless ``steps`` is given; the coefficient w_t comes
        from the ``sde_coef`` group (``ctx.coefficient``, built on the interpolant here); ``t_min``/``t_max``:
        explicit ends of the grid (replay a given grid; default: the endpoint table's sample interval)."""
        if solver not in SDE_METHODS:
            raise ValueError(f"sampler.solver={solver!r} is not a valid SDE solver; valid choices: {list(SDE_METHODS)}")
        last = "none" if last_step is None else last_step
        if last not in LAST_STEPS:
            raise ValueError(f"sampler.last_step={last_step!r} is not valid; valid choices: {list(LAST_STEPS)}")
        if steps is None:
            if nfe is None:
                raise ValueError("sampler=sde needs sampler.nfe or sampler.steps")
            steps = steps_for_nfe(lambda k: _nfe(solver, k, last) if k >= 2 else None, nfe,
                                  f"the {solver} SDE solver and last_step={last}")
        coef = ctx.coefficient
        if coef is None:
            raise ValueError("sampler=sde needs an SDE coefficient (the sde_coef group)")
        if not isinstance(coef, Diffusion):
            coef = coef(ctx.interpolant)
        return cls(ctx.interpolant, ctx.prediction, coef, solver, steps, last_step=last, last_step_size=last_step_size,
                   sample_eps=ctx.sample_eps, grid=grid, t_min=t_min, t_max=t_max, **ctx.guidance)

    def describe(self) -> dict:
        d = self.diffusion.describe()
        return {**super().describe(), "sde_coef": d["name"], "sde_coef_norm": d.get("norm"),
                "sde_coef_eta": d.get("eta"), "last_step": self.last_step}

    def __init__(
        self,
        interpolant,
        prediction: str,
        diffusion: Diffusion,
        method: str = "em",
        steps: int = 250,
        *,
        last_step: str | None = "mean",
        last_step_size: float = 0.04,
        sample_eps: float | None = None,
        t_min: float | None = None,
        t_max: float | None = None,
        grid: str = "uniform",
        **guidance,
    ):
        super().__init__(**guidance)
        if method not in SDE_METHODS:
            raise ValueError(f"unknown SDE solver {method!r}; valid choices: {list(SDE_METHODS)}")
        last_step = "none" if last_step is None else last_step
        if last_step not in LAST_STEPS:
            raise ValueError(f"unknown last_step {last_step!r}; valid choices: {list(LAST_STEPS)}")
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 2:
            raise ValueError(
                f"SDE steps must be an integer >= 2 (grid points, the last step included), got {steps!r}"
            )
        size = float(last_step_size)
        if last_step != "none" and not (0 < size < 0.5):
            raise ValueError(
                f"last_step_size must be in (0, 0.5) for last_step={last_step!r}, got {last_step_size!r}"
            )
        if not isinstance(diffusion, Diffusion):
            raise TypeError(
                f"diffusion must be a Diffusion (see get_diffusion), got {type(diffusion).__name__}"
            )
        self.field, self.diffusion = Field(interpolant, prediction), diffusion
        self.method, self.steps, self.last_step = method, steps, last_step
        self.last_step_size = 0.0 if last_step == "none" else size
        lo, hi = sample_interval(
            interpolant,
            prediction,
            sde=True,
            noise_singular=diffusion.singular_at_noise_end,
            last_step_size=self.last_step_size,
            eps=sample_eps,
        )
        if t_min is not None and last_step != "none" and abs(float(t_min) - self.last_step_size) > 1e-12:
            raise ValueError(
                f"t_min={t_min!r} with last_step={last_step!r}: the last step goes from t_min to 0, so "
                f"last_step_size must equal t_min (got {self.last_step_size!r}); or pass last_step='none'"
            )
        self.t_min = lo if t_min is None else float(t_min)
        self.t_max = hi if t_max is None else float(t_max)
        self.explicit_interval = t_min is not None or t_max is not None
        self.times = time_grid(self.t_max, self.t_min, steps, grid)
        self.w = diffusion(self.times).tolist()  # float64; refuses t = 1 where w is infinite
        self.name = f"sde_{method}"

    @property
    def expected_nfe(self) -> int:
        return _nfe(self.method, self.steps, self.last_step)

    @property
    def tag(self) -> str:
        d = self.diffusion.name + ("" if self.diffusion.norm == 1.0 else f"x{self.diffusion.norm:g}")
        last = "" if (self.last_step, self.last_step_size) == ("mean", 0.04) else f"-last_{self.last_step}"
        span = f"-t{self.t_min:g}_{self.t_max:g}" if self.explicit_interval else ""
        return f"{self.name}-{d}-nfe{self.expected_nfe}{last}{span}-cfg{self.guidance_scale}"

    def drift(self, model, x, t, w=None, y=None):
        """f = v - w s / 2 and the velocity v, from one evaluation (the score is skipped where w = 0).

        ``t``: a float or a per-sample tensor [B]; ``w``: the coefficient at t (a float or [B]), by default
        ``self.diffusion(t)`` (which refuses t = 1 where w is infinite). Where sigma = 0 (t = 0) and w = 0,
        w s / 2 = -(w / sigma) eps_hat / 2 is 0 * inf: its limit uses ``diffusion.w_over_sigma`` (finite for
        w_KL, sigma, t, ...), so the drift there is the limit of the drift, v + (w / sigma) eps_hat / 2 (the
        limit is the diffusion's: a ``w`` passed in is taken to be its values).
        """
        tt = t.detach().to("cpu", torch.float64) if isinstance(t, Tensor) else torch.tensor(float(t), dtype=F64)
        w = self.diffusion(tt) if w is None else torch.as_tensor(w, dtype=torch.float64).cpu()
        w = w.expand(tt.shape) if w.ndim == 0 and tt.ndim > 0 else w
        pred, c = self.field.evaluate(model, x, t, y)
        v = self.field.to(pred, "velocity", x, c)
        end = (self.field.interpolant.sigma(tt) == 0) & (w == 0)  # the 0 * inf case
        need_s = w != 0
        r = self.diffusion.w_over_sigma(tt) if bool(end.any()) else torch.zeros_like(w)
        need_e = end & (r != 0)
        if not bool(need_s.any() or need_e.any()):
            return v, v
        if w.ndim == 0:  # one time for the batch: checked conversions
            if bool(need_s):
                return v - 0.5 * float(w) * self.field.to(pred, "score", x, c), v
            return v + 0.5 * float(r) * self.field.to(pred, "noise", x, c), v
        term = torch.zeros_like(x)
        for need, dst, coef in ((need_s, "score", -0.5 * w), (need_e, "noise", 0.5 * r)):
            if bool(need.any()):  # unchecked where some samples do not need it; checked below
                part = self.field.to(pred, dst, x, c, check=bool(need.all()))
                term = torch.where(expand_like(need, x).bool(), expand_like(coef, x) * part, term)
        if not bool(torch.isfinite(term).all()) and bool(torch.isfinite(pred).all()):
            raise EndpointError(f"the SDE drift is not finite at t = {tt.flatten()[:4].tolist()}")
        return v + term, v

    def __call__(
        self, model, z, y=None, *, noise=None, generator=None, seeds=None, return_trajectory=False
    ) -> SampleOutput:
        m = self.wrap(model)
        xi = step_noise_source(noise, generator, z, seeds)
        ts, ws = self.times.tolist(), self.w
        x, traj = z, [z] if return_trajectory else None
        for i in range(self.steps - 1):
            t, h, w = ts[i], ts[i + 1] - ts[i], ws[i]
            kick = math.sqrt(w * -h) * xi(i)
            if self.method == "em":
                x = x + h * self.drift(m, x, t, w, y)[0] + kick
            else:
                xh = x + kick
                k1 = self.drift(m, xh, t, w, y)[0]
                k2 = self.drift(m, xh + h * k1, ts[i + 1], ws[i + 1], y)[0]
                x = xh + 0.5 * h * (k1 + k2)
            if traj is not None:
                traj.append(x)
        x = self._last(m, x, y)
        times = None
        if return_trajectory:
            times = ts
            if self.last_step != "none":
                traj.append(x)
                times = ts + [0.0]
        return SampleOutput(x, m.nfe, traj, times)

    def _last(self, m, x, y):
        if self.last_step == "none":
            return x
        t, size = self.t_min, self.last_step_size
        if self.last_step == "tweedie":
            pred, c = self.field.evaluate(m, x, t, y)
            return self.field.to(pred, "x0", x, c)
        f, v = self.drift(m, x, t, self.w[-1], y)
        return x - size * (f if self.last_step == "mean" else v)
